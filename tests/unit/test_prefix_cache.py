"""Prefix reuse: idle slots keep their KV cache, a prompt that starts the same way skips that part
of the prefill, and idle caches are dropped least recently used first under pressure."""

from __future__ import annotations

import numpy as np
import pytest

from rill.backends.fake import FakeBackend
from rill.engine.detokenize import Detokenizer
from rill.backends.base import BatchItem
from rill.engine.loop import EngineLoop
from rill.engine.placement import MIN_COPY_GAIN
from rill.engine.sequence import Sequence
from rill.engine.slots import SlotPool, shared_prefix
from rill.engine.types import Event, Failed, Finished, Request
from rill.sampling.template import CHATML, ChatTemplate
from tests.unit.test_engine_loop import GREEDY, RecordingBackend, assert_only_idle_caches, run_until_idle, text_of

SYSTEM = "You are a terse assistant. Answer in one line and never apologise. " * 2


def tokens_of(backend: FakeBackend, messages: list[dict]) -> tuple[int, ...]:
    prompt = ChatTemplate(CHATML).render(messages)
    return tuple(backend.tokenize(prompt, add_bos=False))


def submit(loop: EngineLoop, rid: str, messages: list[dict], *, n: int = 1) -> list[Event]:
    events: list[Event] = []
    request = Request(rid, tokens_of(loop.backend, messages), 10_000, GREEDY, n=n)
    choices = [Sequence(request=request, publish=events.extend, rng=np.random.default_rng(i),
                        detok=Detokenizer(), index=i) for i in range(n)]
    choices[0].forks = choices[1:]
    loop.add(choices[0])
    return events


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def finished(events: list[Event]) -> Finished:
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


# -- the pool ---------------------------------------------------------------------------------

def test_shared_prefix_counts_leading_equal_tokens():
    a = np.array([1, 2, 3, 4], np.int32)
    assert shared_prefix(a, np.array([1, 2, 9], np.int32)) == 2
    assert shared_prefix(a, np.array([1, 2], np.int32)) == 2
    assert shared_prefix(a, np.array([7], np.int32)) == 0
    assert shared_prefix(a, np.zeros(0, np.int32)) == 0


def test_pool_prefers_the_longest_match_then_the_least_recently_used():
    pool = SlotPool(3)
    for seq_id in range(3):
        pool.take(seq_id)
    pool.give_back(0, np.array([1, 2, 3], np.int32))
    pool.give_back(1, np.array([1, 2, 4, 5], np.int32))
    pool.give_back(2, np.array([1, 2, 4, 6], np.int32))
    assert pool.best_match(np.array([1, 2, 4, 6, 8], np.int32)) == (2, 4)
    assert pool.best_match(np.array([1, 2, 4, 7], np.int32)) == (1, 3)  # tie: 1 is older than 2
    assert pool.best_match(np.array([9], np.int32)) == (-1, 0)
    assert pool.evict_lru() == 0 and pool.evict_lru() == 1
    assert pool.victim() == 0  # an empty slot is taken before one that still holds a cache
    assert pool.cached() == {2: [1, 2, 4, 6]}


# -- the engine -------------------------------------------------------------------------------

def test_the_same_prompt_again_prefills_only_its_last_token_and_answers_the_same():
    backend = RecordingBackend(max_sequences=2)
    loop = EngineLoop(backend, max_running=2)
    first = submit(loop, "a", user("what is the capital of France?"))
    run_until_idle(loop)
    backend.batches.clear()
    again = submit(loop, "b", user("what is the capital of France?"))
    run_until_idle(loop)
    n_prompt = finished(again).num_prompt_tokens
    assert text_of(again) == text_of(first) == "what is the capital of France?"
    assert finished(first).num_cached_prompt_tokens == 0
    assert finished(again).num_cached_prompt_tokens == n_prompt - 2
    assert backend.batches[0][0].start == n_prompt - 2 and len(backend.batches[0][0].tokens) == 2
    assert_only_idle_caches(loop)


def test_a_shared_system_prompt_and_the_previous_turn_are_reused():
    backend = RecordingBackend(max_sequences=1)
    loop = EngineLoop(backend, max_running=1)
    first = submit(loop, "a", user("first question"))
    run_until_idle(loop)
    other = submit(loop, "b", user("a different question"))
    run_until_idle(loop)
    # everything up to the user message's text is shared: the system prompt and the user header
    common = shared_prefix(np.array(tokens_of(backend, user("first question"))),
                           np.array(tokens_of(backend, user("a different question"))))
    assert common > len(SYSTEM)
    assert finished(other).num_cached_prompt_tokens == common
    # the next turn of chat "b" starts with its whole previous prompt and answer
    follow_up = [*user("a different question"), {"role": "assistant", "content": text_of(other)},
                 {"role": "user", "content": "and another"}]
    turn2 = submit(loop, "c", follow_up)
    run_until_idle(loop)
    assert text_of(turn2) == "and another"
    # the previous prompt, not its answer: that was computed by decode steps (Sequence.num_reusable)
    assert finished(turn2).num_cached_prompt_tokens == len(tokens_of(backend, user("a different question")))
    assert text_of(first) == "first question"


def test_on_a_batch_invariant_backend_the_next_turn_reuses_the_previous_answer_too():
    backend = FakeBackend(max_sequences=1)
    assert backend.batch_invariant
    loop = EngineLoop(backend, max_running=1)
    turn1 = submit(loop, "a", user("where does the river go"))
    run_until_idle(loop)
    answer = text_of(turn1)
    follow_up = [*user("where does the river go"), {"role": "assistant", "content": answer},
                 {"role": "user", "content": "and then"}]
    turn2 = submit(loop, "b", follow_up)
    run_until_idle(loop)
    assert text_of(turn2) == "and then"
    # the previous prompt and every token of the answer (the end-of-turn token after it was
    # sampled, never fed back: the template writes it again)
    prompt1 = len(tokens_of(backend, user("where does the river go")))
    assert finished(turn2).num_cached_prompt_tokens == prompt1 + len(answer.encode())
    fresh = EngineLoop(FakeBackend(max_sequences=1), max_running=1)
    cold = submit(fresh, "c", follow_up)
    run_until_idle(fresh)
    assert text_of(cold) == text_of(turn2) and finished(cold).num_cached_prompt_tokens == 0


def test_greedy_output_is_the_same_with_and_without_the_cache():
    messages = [user(f"question {i} about the same topic") for i in range(4)]
    cold = []
    for m in messages:  # each on a fresh engine: nothing cached
        loop = EngineLoop(FakeBackend(max_sequences=2), max_running=2)
        cold.append(submit(loop, "x", m))
        run_until_idle(loop)
    loop = EngineLoop(FakeBackend(max_sequences=2), max_running=2)
    warm = []
    for m in messages:
        warm.append(submit(loop, "y", m))
        run_until_idle(loop)
    assert [text_of(e) for e in warm] == [text_of(e) for e in cold]
    assert all(finished(e).num_cached_prompt_tokens > 0 for e in warm[1:])


def test_idle_caches_are_evicted_least_recently_used_when_memory_is_short():
    prompt_len = len(tokens_of(FakeBackend(), user("q0")))
    # room for about three sequences' worth of cells, four slots
    backend = RecordingBackend(max_sequences=4, kv_capacity=3 * (prompt_len + 8))
    loop = EngineLoop(backend, max_running=4)
    outs = []
    for i in range(6):
        outs.append(submit(loop, f"r{i}", [{"role": "user", "content": f"{i} " + "z" * 20 + SYSTEM}]))
        run_until_idle(loop)
        assert sum(map(len, backend._seqs.values())) <= backend.kv_capacity
    assert all(isinstance(o[-1], Finished) for o in outs)
    assert_only_idle_caches(loop)
    cached = loop.slots.cached()
    assert 1 <= len(cached) <= 3
    # what is left is the most recent answers' caches
    newest = tokens_of(backend, [{"role": "user", "content": "5 " + "z" * 20 + SYSTEM}])
    assert any(tokens[: len(newest)] == list(newest) for tokens in cached.values())


def test_a_running_sequences_cache_is_copied_for_a_prompt_that_shares_a_long_prefix():
    backend = RecordingBackend(max_sequences=2)
    copies = []
    original_copy = backend.copy
    backend.copy = lambda src, dst: (copies.append((src, dst)), original_copy(src, dst))
    loop = EngineLoop(backend, max_running=2)
    long_system = "shared context " * 10
    assert len(long_system) > MIN_COPY_GAIN * 2
    a = submit(loop, "a", [{"role": "system", "content": long_system}, {"role": "user", "content": "one " * 20}])
    loop._drain(), loop._admit(), loop._step()  # "a" prefilled and decoding
    b = submit(loop, "b", [{"role": "system", "content": long_system}, {"role": "user", "content": "two"}])
    run_until_idle(loop)
    assert copies == [(0, 1)]
    assert finished(b).num_cached_prompt_tokens >= len(long_system)
    assert text_of(b) == "two" and text_of(a) == "one " * 20
    assert_only_idle_caches(loop)


def test_n_choices_report_the_cached_prompt_once():
    loop = EngineLoop(FakeBackend(max_sequences=4), max_running=4)
    submit(loop, "warm", user("pick one"))
    run_until_idle(loop)
    events = submit(loop, "n3", user("pick one"), n=3)
    run_until_idle(loop)
    ends = [e for e in events if isinstance(e, Finished)]
    assert len(ends) == 3
    assert {e.num_cached_prompt_tokens for e in ends} == {ends[0].num_prompt_tokens - 2}


def test_a_failed_step_keeps_no_cache():
    backend = FakeBackend(max_sequences=2)
    loop = EngineLoop(backend, max_running=2)
    events = submit(loop, "bad", user("please FAIL now"))
    run_until_idle(loop)
    assert isinstance(events[-1], Failed)
    assert loop.slots.cached() == {} and not any(backend._seqs.values())


@pytest.mark.parametrize("message", ["x", "a longer message that runs for a while"])
def test_a_preempted_sequence_reports_the_reuse_of_its_first_admission(message):
    backend = FakeBackend(max_sequences=2)
    loop = EngineLoop(backend, max_running=2)
    submit(loop, "warm", user(message))
    run_until_idle(loop)
    again = submit(loop, "again", user(message))
    loop._drain(), loop._admit()
    seq = loop.running[0]
    reused = seq.num_reused
    assert reused > 0
    loop._preempt(seq)
    run_until_idle(loop)
    assert text_of(again) == message
    assert finished(again).num_cached_prompt_tokens == reused


def test_one_client_at_a_time_keeps_a_cache_per_prompt_in_the_idle_slots():
    backend = RecordingBackend(max_sequences=4)
    loop = EngineLoop(backend, max_running=4)
    questions = ["first question", "second question", "third question"]
    for q in questions:  # each runs alone, in slot 0, whose cache moves aside for the next
        submit(loop, q, user(q))
        run_until_idle(loop)
    assert len(loop.slots.cached()) == 3
    again = [submit(loop, f"{q} again", user(q)) for q in questions]
    run_until_idle(loop)
    for q, events in zip(questions, again):
        assert text_of(events) == q
        assert finished(events).num_cached_prompt_tokens == finished(events).num_prompt_tokens - 2
    assert_only_idle_caches(loop)


@pytest.mark.parametrize("order", ["same", "reversed", "one per step", "reversed, one per step"])
def test_cached_prompts_that_arrive_together_all_reuse_their_prefix(order):
    """16 distinct prompts, each served once (each cache kept in an idle slot), then all at once:
    admitting one must not overwrite the cache another waiting prompt is about to reuse."""
    backend = FakeBackend(max_sequences=16, kv_capacity=16 * 2048)
    loop = EngineLoop(backend, max_running=16)
    prompts = [user(f"{i}: " + f"tell me about the number {i} " * 6) for i in range(16)]
    for i, messages in enumerate(prompts):
        submit(loop, f"warm{i}", messages)
        run_until_idle(loop)
    assert backend.max_sequences == loop.slots.num_free == 16
    again = list(enumerate(prompts))
    if order.startswith("reversed"):
        again.reverse()
    events = {}
    for i, messages in again:
        events[i] = submit(loop, f"again{i}", messages)
        if order.endswith("one per step"):  # as they come over HTTP: each admitted before the next arrives
            loop._drain()
            loop._tick()
    run_until_idle(loop)
    for i, messages in enumerate(prompts):
        prompt = len(tokens_of(backend, messages))
        assert finished(events[i]).num_cached_prompt_tokens >= prompt - 2, (i, finished(events[i]))


def test_prompts_that_share_a_beginning_keep_their_caches_when_every_slot_holds_one():
    """Every slot holds some earlier cache; then distinct prompts that share a long beginning
    (a system prompt, a document) come one at a time, and again at once. A prompt whose best
    match is another prompt's cache shares only that beginning with it: it must take the least
    recently used slot, not overwrite that cache (before, each overwrote the previous one's, and
    of 8 only the last was reused: a burst of repeated ~500-token prompts waited 20 s)."""
    backend = FakeBackend(max_sequences=8, kv_capacity=8 * 2048)
    loop = EngineLoop(backend, max_running=8)
    for i in range(8):  # short chats fill every slot
        submit(loop, f"short{i}", [{"role": "user", "content": f"hi {i}"}])
        run_until_idle(loop)
    document = "The river rises in the hills and runs to the sea past seven towns. " * 8
    prompts = [user(document + f"Question {i}: which town is number {i}?") for i in range(8)]
    for i, messages in enumerate(prompts):
        submit(loop, f"first{i}", messages)
        run_until_idle(loop)
    events = [submit(loop, f"again{i}", messages) for i, messages in enumerate(prompts)]
    run_until_idle(loop)
    for i, messages in enumerate(prompts):
        prompt = len(tokens_of(backend, messages))
        assert finished(events[i]).num_cached_prompt_tokens >= prompt - 2, (i, finished(events[i]))


def test_the_pool_spares_the_caches_it_is_told_to_keep():
    pool = SlotPool(3)
    for seq_id in range(3):
        pool.take(seq_id)
        pool.give_back(seq_id, np.array([seq_id, 9], np.int32))
    assert pool.lowest_free(avoid=frozenset({0, 1})) == 2
    assert pool.lowest_free(avoid=frozenset({0, 1, 2})) == 0  # all wanted: the lowest all the same
    assert pool.evict_lru(keep=frozenset({0})) == 1  # the least recently used of the others
    assert pool.evict_lru(keep=frozenset({0, 2})) == 0  # only kept ones hold anything: the oldest goes


class Running:
    """What compaction reads of a running sequence: its slot and status."""

    def __init__(self, seq_id: int):
        from rill.engine.types import Status

        self.seq_id, self.status = seq_id, Status.DECODING


def placement_with(cached: dict[int, list[int]], running: list[int]):
    from rill.engine.placement import Placement

    backend = FakeBackend(max_sequences=4)
    slots = SlotPool(4)
    for seq_id in range(4):
        slots.take(seq_id)
    for seq_id, tokens in cached.items():
        backend.forward([BatchItem(seq_id, tokens, 0, num_logits=0)])
        slots.give_back(seq_id, np.array(tokens, np.int32))
    for seq_id in range(4):
        if seq_id not in cached and seq_id not in running:
            slots.give_back(seq_id)
    for seq_id in running:
        backend.forward([BatchItem(seq_id, [1, 2], 0, num_logits=0)])
    return Placement(backend, slots), slots


def test_compaction_leaves_one_run_of_sequences_where_it_is():
    placement, slots = placement_with({0: [5, 6, 7]}, running=[2])
    alone = Running(2)
    placement.compact([alone])
    assert alone.seq_id == 2 and slots.holds(0) == 3  # one sequence is one run: slot 0's cache stays


def test_compaction_closes_a_gap_when_an_empty_slot_keeps_the_displaced_cache():
    placement, slots = placement_with({1: [5, 6, 7]}, running=[0, 2])
    low, top = Running(0), Running(2)
    placement.compact([low, top])
    assert top.seq_id == 1  # the gap at 1 is closed ...
    assert [s for s in (2, 3) if slots.holds(s) == 3]  # ... and its cache kept


def test_compaction_exchanges_caches_when_no_slot_is_empty():
    placement, slots = placement_with({1: [5, 6, 7], 3: [8, 9]}, running=[0, 2])
    low, top = Running(0), Running(2)
    placement.compact([low, top])
    assert top.seq_id == 1 and placement.backend._seqs[1] == [1, 2]  # the sequence moved with its cache
    assert slots.cached() == {2: [5, 6, 7], 3: [8, 9]}  # slot 1's cached prompt lies where it was
    assert placement.backend._seqs[2] == [5, 6, 7]
