"""Replica routing's parts alone: the conversation key, the prefix index, health's state machine
and the policies (rill/upstreams)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rill.upstreams.health import Health
from rill.upstreams.prefix_index import BLOCK_CHARS, MIN_BLOCKS, ReplicaIndex, block_hashes
from rill.upstreams.routing import Policy, head_key, rendezvous
from rill.upstreams.routing_key import conversation_text

SYSTEM = "You are a careful assistant who answers questions about rivers. " * 4


def chat(*turns: str, system: str = SYSTEM) -> dict:
    roles = ["user", "assistant"]
    return {"model": "m", "messages": [{"role": "system", "content": system},
                                       *({"role": roles[i % 2], "content": t} for i, t in enumerate(turns))]}


# ---- the conversation key ----------------------------------------------------------------------

def test_a_conversations_next_turn_extends_its_text():
    first, *_ = conversation_text(chat("Tell me about the Nile. " * 8))
    second, *_ = conversation_text(chat("Tell me about the Nile. " * 8, "It is long.", "And the Amazon?"))
    assert second.startswith(first) and len(second) > len(first)


def test_the_head_ends_after_the_first_user_turn_and_does_not_move_as_the_conversation_grows():
    body = chat("Question one?", "Answer.", "Question two?")
    text, head, shared = conversation_text(body)
    assert text[:shared].endswith(SYSTEM) and text[:head].endswith("Question one?")
    assert conversation_text(chat("Question one?"))[1] == head


def test_every_protocol_renders_the_same_conversation_alike():
    messages = chat("What is a delta?")
    responses = {"instructions": SYSTEM, "input": [{"role": "user", "content": [{"type": "input_text",
                                                                                 "text": "What is a delta?"}]}]}
    anthropic = {"system": SYSTEM, "messages": [{"role": "user", "content": [{"type": "text",
                                                                              "text": "What is a delta?"}]}]}
    texts = {conversation_text(b)[0] for b in (messages, responses, anthropic)}
    assert len(texts) == 1


def test_tools_are_part_of_the_key():
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    plain, *_ = conversation_text(chat("Hi"))
    with_tools, *_ = conversation_text({**chat("Hi"), "tools": [tool]})
    assert plain != with_tools and "weather" in with_tools


def test_two_agent_loops_with_one_system_prompt_differ_after_it():
    a, *_ = conversation_text(chat("Fix the bug in parser.py: it drops the last token of every line. " * 3))
    b, *_ = conversation_text(chat("Write tests for lexer.py: cover comments, strings and numbers. " * 3))
    ha, hb = block_hashes(a), block_hashes(b)
    shared = next(i for i, (x, y) in enumerate(zip(ha, hb)) if x != y)
    assert 0 < shared < len(ha)  # the system prompt's blocks match, the rest does not


# ---- the prefix index --------------------------------------------------------------------------

def test_block_hashes_chain_so_a_changed_block_changes_every_later_hash():
    text = "x" * (BLOCK_CHARS * 4)
    changed = "y" + text[1:]
    assert len(block_hashes(text)) == 4
    assert not set(block_hashes(text)) & set(block_hashes(changed))
    assert block_hashes(text + "tail")[:4] == block_hashes(text)  # a partial block is not a block


def test_the_index_matches_the_leading_blocks_it_holds():
    index = ReplicaIndex()
    first = block_hashes("a" * BLOCK_CHARS * 5)
    index.insert(first)
    longer = block_hashes("a" * BLOCK_CHARS * 8)
    assert index.match(longer) == 5
    assert index.match(block_hashes("b" * BLOCK_CHARS * 8)) == 0


def test_eviction_drops_a_conversations_tail_before_its_head():
    index = ReplicaIndex(max_blocks=MIN_BLOCKS)
    old = block_hashes("o" * BLOCK_CHARS * 100)
    index.insert(old)
    index.insert(block_hashes("n" * BLOCK_CHARS * (MIN_BLOCKS - 60)))  # pushes 40 of old's blocks out
    assert len(index) == MIN_BLOCKS
    assert index.match(old) == 60  # its head is still there, its tail gone


def test_the_index_learns_a_smaller_replica_from_its_reported_misses_and_grows_back_on_hits():
    index = ReplicaIndex(max_blocks=4096)
    index.insert(block_hashes("z" * BLOCK_CHARS * 2000))
    index.learn(predicted=100, held=10)
    assert index.capacity < 2000 and len(index) <= index.capacity
    shrunk = index.capacity
    index.learn(predicted=100, held=100)
    assert index.capacity > shrunk
    index.learn(predicted=0, held=0)  # nothing predicted: nothing learned
    assert index.capacity == pytest.approx(shrunk * 1.02)


# ---- health --------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_eject_and_a_success_in_between_resets_the_count():
    clock = Clock()
    health = Health(eject_after=3, eject_seconds=30, clock=clock)
    assert not health.failure() and not health.failure()
    health.success()
    assert not health.failure() and not health.failure()
    assert health.failure() is True
    assert health.state == "ejected" and not health.available() and health.ejected_since is not None


def test_an_ejected_replica_turns_half_open_and_takes_one_trial_at_a_time():
    clock = Clock()
    health = Health(eject_after=1, eject_seconds=30, clock=clock)
    health.failure()
    clock.now += 29.9
    assert health.state == "ejected"
    clock.now += 0.2
    assert health.state == "half_open" and health.available()
    health.take()
    assert not health.available()  # the trial is out
    health.success()
    assert health.state == "healthy" and health.available() and health.ejected_since is None


def test_a_failed_trial_ejects_again_for_twice_as_long_up_to_the_cap():
    clock = Clock()
    health = Health(eject_after=1, eject_seconds=10, clock=clock)
    health.failure()
    lengths = []
    for _ in range(6):
        clock.now += health.eta()
        assert health.state == "half_open"
        health.take()
        health.failure()
        lengths.append(health.eta())
    assert lengths[:3] == [20, 40, 80] and max(lengths) == 100  # MAX_BACKOFF x eject_seconds
    assert health.ejections == 7


def test_a_busy_or_refused_trial_frees_the_half_open_slot():
    clock = Clock()
    health = Health(eject_after=1, eject_seconds=5, clock=clock)
    health.failure()
    clock.now += 5
    health.take()
    health.release()
    assert health.available() and health.state == "half_open"


# ---- the policies ------------------------------------------------------------------------------

@dataclass(eq=False)
class FakeReplica:
    url: str
    position: int
    in_flight: int = 0
    weight: float = 1.0
    index: ReplicaIndex = field(default_factory=ReplicaIndex)


def replicas(n: int) -> list[FakeReplica]:
    return [FakeReplica(f"http://r{i}:8000/v1", i) for i in range(n)]


def prefix_policy(**kw) -> Policy:
    return Policy("prefix", **{"balance_abs": 8, "balance_rel": 1.5, "cache_threshold": 0.5, **kw})


def test_a_new_conversation_goes_home_and_two_gateways_agree_on_its_home():
    gateway_a, gateway_b = prefix_policy(), prefix_policy()
    homes = []
    for n in range(40):
        body = chat(f"Question number {n} about rivers?")
        a = gateway_a.route(body, replicas(4))
        b = gateway_b.route(body, replicas(4))
        assert a.reason == b.reason == "home"
        assert a.order[0].url == b.order[0].url
        homes.append(a.order[0].url)
    assert len(set(homes)) == 4  # conversations spread over every replica


def test_the_next_turn_follows_the_replica_that_holds_the_conversation():
    policy, reps = prefix_policy(), replicas(4)
    first = chat("Tell me about the Danube, its source and its mouth, in detail please.")
    route = policy.route(first, reps)
    home = route.order[0]
    other = next(r for r in reps if r is not home)
    other.index.insert(route.hashes, route.head)  # the first turn went elsewhere (the load guard sent it, say)
    later = chat("Tell me about the Danube, its source and its mouth, in detail please.", "It rises in the Black "
                 "Forest and ends in the Black Sea.", "Which countries does it cross?")
    second = policy.route(later, reps)
    assert second.reason == "prefix" and second.order[0] is other
    assert second.matched[other.position] == len(route.hashes)


def test_a_new_conversation_that_only_shares_the_system_prompt_goes_home():
    policy, reps = prefix_policy(cache_threshold=0.1), replicas(4)
    seen = policy.route(chat("A question about reefs? " * 4), reps)
    seen.order[0].index.insert(seen.hashes, seen.head)
    homes = set()
    for n in range(12):
        route = policy.route(chat(f"Question {n} about tides? " * 4), reps)
        assert route.reason == "home" and route.matched[seen.order[0].position] == 0
        homes.add(route.order[0].position)
    assert len(homes) > 1  # they spread instead of following the system prompt to one replica


def test_conversations_sharing_a_long_system_prompt_share_a_home_on_every_gateway():
    instructions = "You are the release agent. Follow the checklist: build, test, tag, publish. " * 10
    a, b, reps = prefix_policy(), prefix_policy(), replicas(8)
    firsts = set()
    for n in range(10):
        body = chat(f"Release version 1.{n}.", system=instructions)
        route_a, route_b = a.route(body, reps), b.route(body, reps)
        assert route_a.reason == "home" and route_a.order[0] is route_b.order[0]
        firsts.add(route_a.order[0].position)
    assert len(firsts) == 1  # one home, and its cache, for the prompt they share
    short = {a.route(chat(f"Question {n} about tides? " * 4), reps).order[0].position for n in range(12)}
    assert len(short) > 1  # a short system prompt (SYSTEM) pins nothing: conversations spread


def test_a_replica_that_served_the_conversation_but_holds_little_of_it_is_not_picked():
    policy, reps = prefix_policy(), replicas(4)
    first = chat("Short opening question?")
    route = policy.route(first, reps)
    holder = next(r for r in reps if r is not route.order[0])
    holder.index.insert(route.hashes, route.head)
    long_turn = chat("Short opening question?", "An answer. " * 40, "Another question? " * 20)
    assert policy.route(long_turn, reps).reason == "home"  # a few blocks of many: below cache_threshold


def test_the_load_guard_sends_to_the_least_loaded_replica_whatever_the_cache_holds():
    policy, reps = prefix_policy(), replicas(3)
    body = chat("Tell me about lakes. " * 10)
    seen = policy.route(body, reps)
    holder = seen.order[0]
    holder.index.insert(seen.hashes, seen.head)
    holder.in_flight = 20
    idle = next(r for r in reps if r is not holder)
    for r in reps:
        if r is not holder and r is not idle:
            r.in_flight = 3
    route = policy.route(body, reps)
    assert route.reason == "load" and route.order[0] is idle
    holder.in_flight, idle.in_flight = 10, 7  # 10 - 3 is within balance_abs_threshold: the cache decides
    assert policy.route(body, reps).reason == "prefix"


def test_a_home_far_above_the_mean_load_is_skipped_for_the_next_in_its_order():
    policy, reps = prefix_policy(balance_abs=100), replicas(4)
    body = chat("Where do glaciers form?")
    text, head, _ = conversation_text(body)
    order = rendezvous(head_key(text[:head]), reps)
    order[0].in_flight = 6  # mean (6+1)/4 * 1.25 = 2.2: the home is over its bound
    route = policy.route(body, reps)
    assert route.reason == "home" and route.order[0] is order[1]
    assert route.order[1:] == [r for r in order if r is not order[1]]  # the rest: retry order


def test_weights_shift_the_share_of_new_conversations():
    reps = replicas(2)
    reps[1].weight = 3.0
    policy = prefix_policy()
    firsts = [policy.route(chat(f"Conversation {n}?"), reps).order[0].position for n in range(400)]
    assert 0.65 < firsts.count(1) / 400 < 0.85  # 3:1 -> 75%


def test_round_robin_and_least_busy():
    reps = replicas(3)
    rr = Policy("round_robin", balance_abs=8, balance_rel=1.5, cache_threshold=0.5)
    assert [rr.route({}, reps).order[0].position for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    lb = Policy("least_busy", balance_abs=8, balance_rel=1.5, cache_threshold=0.5)
    reps[0].in_flight, reps[1].in_flight, reps[2].in_flight = 4, 1, 2
    route = lb.route({}, reps)
    assert [r.position for r in route.order] == [1, 2, 0]
    reps[0].in_flight = reps[2].in_flight = 1
    assert {lb.route({}, reps).order[0].position for _ in range(6)} == {0, 1, 2}  # ties taken in turn
