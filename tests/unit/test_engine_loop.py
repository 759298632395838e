"""rill.engine.loop driven step by step on the fake backend: continuous batching, the per-step
token budget, chunked prefill, and preemption when the KV cache is full."""

from __future__ import annotations

from typing import Sequence as Seq

import numpy as np

from rill.backends.base import BatchItem
from rill.backends.fake import FakeBackend
from rill.engine.detokenize import Detokenizer
from rill.engine.loop import MAX_WAIT_S, EngineLoop
from rill.engine.sequence import Sequence
from rill.engine.types import (Event, Failed, Finished, FinishReason, PromptLogprobs, Request, SamplingParams, Status,
                               TextDelta)
from rill.sampling.template import CHATML, ChatTemplate

GREEDY = SamplingParams(temperature=0.0)


class RecordingBackend(FakeBackend):
    """The fake backend, remembering every batch it was given, and which cache positions were
    written by one-token items (decode steps). It poses as a backend whose decoded cells differ
    from prefilled ones (llama.cpp with llamafile's kernels), so the prefix cache must never
    reuse those positions."""

    batch_invariant = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches: list[list[BatchItem]] = []
        self.lone: dict[int, list[bool]] = {}  # per seq_id and position: written by a 1-token item

    def forward(self, batch: Seq[BatchItem]) -> np.ndarray:
        self.batches.append(list(batch))
        out = super().forward(batch)
        for item in batch:
            self.lone.setdefault(item.seq_id, []).extend([len(item.tokens) == 1] * len(item.tokens))
        return out

    def copy(self, src: int, dst: int) -> None:
        super().copy(src, dst)
        self.lone[dst] = list(self.lone.get(src, []))

    def swap(self, a: int, b: int) -> None:
        super().swap(a, b)
        self.lone[a], self.lone[b] = self.lone.get(b, []), self.lone.get(a, [])

    def truncate(self, seq_id: int, keep: int) -> bool:
        del self.lone.get(seq_id, [])[keep:]
        return super().truncate(seq_id, keep)

    def release(self, seq_id: int) -> None:
        self.lone.pop(seq_id, None)
        super().release(seq_id)


def submit(loop: EngineLoop, rid: str, message: str, *, max_tokens: int = 10_000) -> list[Event]:
    prompt = ChatTemplate(CHATML).render([{"role": "user", "content": message}])
    tokens = tuple(loop.backend.tokenize(prompt, add_bos=False))
    events: list[Event] = []
    loop.add(Sequence(request=Request(rid, tokens, max_tokens, GREEDY), publish=events.extend,
                      rng=np.random.default_rng(0), detok=Detokenizer()))
    return events


def run_until_idle(loop: EngineLoop, max_steps: int = 10_000) -> int:
    """Drive the loop on this thread, as its thread would; returns the steps taken."""
    for step in range(max_steps):
        if not (loop.running or loop.waiting or loop._inbox):
            return step
        loop._drain()
        loop._tick()
    raise AssertionError("the engine did not go idle")


def assert_only_idle_caches(loop: EngineLoop) -> None:
    """Nothing runs, and the backend holds exactly the caches the idle slots say they keep."""
    assert not loop.running
    held = {seq_id: tokens for seq_id, tokens in loop.backend._seqs.items() if tokens}
    assert held == loop.slots.cached()
    if isinstance(loop.backend, RecordingBackend):  # no kept position was written by decode
        assert not any(any(loop.backend.lone.get(seq_id, [])) for seq_id in held)


def text_of(events: list[Event]) -> str:
    assert isinstance(events[-1], Finished)
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_sequences_are_decoded_together_in_one_batch():
    backend = RecordingBackend(max_sequences=4)
    loop = EngineLoop(backend, max_running=4)
    outs = [submit(loop, f"r{i}", f"message number {i}") for i in range(4)]
    run_until_idle(loop)
    assert [text_of(o) for o in outs] == [f"message number {i}" for i in range(4)]
    assert max(len({item.seq_id for item in batch}) for batch in backend.batches) == 4
    assert_only_idle_caches(loop)


def test_every_step_respects_the_token_budget_and_a_long_prompt_is_prefilled_in_chunks():
    backend = RecordingBackend(max_sequences=2)
    backend.max_batch_tokens = 64
    loop = EngineLoop(backend, max_running=2)
    short = submit(loop, "short", "a reply long enough to still be running " * 2)
    while not loop.running or loop.running[0].status is not Status.DECODING:
        loop._drain(), loop._admit(), loop._step()
    long_ = submit(loop, "long", "x" * 300)
    run_until_idle(loop)
    assert all(sum(len(i.tokens) for i in batch) <= 64 for batch in backend.batches)
    prefill_steps = [b for b in backend.batches if any(i.seq_id == 1 and len(i.tokens) > 1 for i in b)]
    assert len(prefill_steps) >= 5  # ~320 prompt tokens in chunks of at most 63
    # while the long prompt was read, the running stream got a token in every one of those steps
    assert all(any(i.seq_id == 0 and len(i.tokens) == 1 for i in b) for b in prefill_steps)
    assert text_of(short) == "a reply long enough to still be running " * 2
    assert text_of(long_) == "x" * 300


def test_a_full_kv_cache_preempts_the_newest_sequence_which_resumes_with_the_same_output():
    backend = RecordingBackend(max_sequences=3, kv_capacity=220)
    loop = EngineLoop(backend, max_running=3)
    # prompts of ~75 tokens are admitted two at a time; their echoes then outgrow the cache
    messages = [f"{i}: " + "the quick brown fox jumps over the lazy dog " for i in range(3)]
    outs = [submit(loop, f"r{i}", m) for i, m in enumerate(messages)]
    seqs = list(loop._inbox)
    run_until_idle(loop)
    assert [text_of(o) for o in outs] == messages  # nothing lost, nothing repeated
    assert sum(s.num_preemptions for s in seqs) >= 1
    assert_only_idle_caches(loop)


def test_a_sequence_alone_that_cannot_fit_fails_instead_of_looping():
    backend = FakeBackend(max_sequences=1, kv_capacity=40)
    loop = EngineLoop(backend, max_running=1)
    events = submit(loop, "big", "y" * 100)
    run_until_idle(loop)
    assert isinstance(events[-1], Failed) and "KV cache" in events[-1].message


def test_length_cap_and_finish_reason_with_several_running():
    loop = EngineLoop(FakeBackend(max_sequences=2), max_running=2)
    a = submit(loop, "a", "abcdefghij", max_tokens=3)
    b = submit(loop, "b", "klm")
    run_until_idle(loop)
    assert text_of(a) == "abc" and a[-1].reason is FinishReason.LENGTH
    assert text_of(b) == "klm" and b[-1].reason is FinishReason.STOP


def test_service_tier_priority_orders_admission_fifo_within_a_tier():
    backend = RecordingBackend(max_sequences=1)
    loop = EngineLoop(backend, max_running=1)
    order: list[str] = []

    def submit_tier(rid: str, priority: int) -> None:
        prompt = ChatTemplate(CHATML).render([{"role": "user", "content": rid}])
        tokens = tuple(backend.tokenize(prompt, add_bos=False))
        loop.add(Sequence(request=Request(rid, tokens, 100, GREEDY, priority=priority),
                          publish=lambda events, rid=rid: order.append(rid) if isinstance(events[-1], Finished) else None,
                          rng=np.random.default_rng(0), detok=Detokenizer()))

    submit_tier("busy", 1)
    loop._drain(), loop._admit(), loop._step()  # "busy" holds the only slot
    for rid, priority in [("flex-1", 2), ("default-1", 1), ("priority-1", 0), ("default-2", 1), ("priority-2", 0)]:
        submit_tier(rid, priority)
    run_until_idle(loop)
    assert order == ["busy", "priority-1", "priority-2", "default-1", "default-2", "flex-1"]


def test_a_gap_in_the_running_seq_ids_is_closed_by_moving_the_highest_sequence_down():
    backend = RecordingBackend(max_sequences=5)  # a fifth, empty slot keeps the cache the move displaces
    loop = EngineLoop(backend, max_running=5)
    messages = ["a long reply that keeps going for a while", "ab", "a long reply that keeps going, too",
                "another long reply that keeps going on"]
    outs = [submit(loop, f"r{i}", m) for i, m in enumerate(messages)]
    run_until_idle(loop)
    assert [text_of(o) for o in outs] == messages  # a moved sequence continues where it was
    decode_steps = [sorted(i.seq_id for i in b) for b in backend.batches if all(len(i.tokens) == 1 for i in b)]
    assert [0, 1, 2, 3] in decode_steps
    # once "ab" (slot 1) ended, slot 3's sequence moved to 1: from then on no decode step has a gap
    ended = next(n for n, ids in enumerate(decode_steps) if len(ids) == 3)
    assert all(ids == list(range(len(ids))) for ids in decode_steps[ended + 1:])
    assert_only_idle_caches(loop)
    prompt_ab = submit(loop, "ab-again", "ab")
    run_until_idle(loop)
    assert prompt_ab[-1].num_cached_prompt_tokens > 0  # "ab"'s cache was kept in the empty slot


def test_a_gap_is_closed_by_an_exchange_that_keeps_the_cached_prompt():
    backend = RecordingBackend(max_sequences=4)  # no empty slot: "ab"'s cache trades places
    loop = EngineLoop(backend, max_running=4)
    messages = ["a long reply that keeps going for a while", "ab", "a long reply that keeps going, too",
                "another long reply that keeps going on"]
    outs = [submit(loop, f"r{i}", m) for i, m in enumerate(messages)]
    run_until_idle(loop)
    assert [text_of(o) for o in outs] == messages  # the moved sequence continues where it was
    decode_steps = [sorted(i.seq_id for i in b) for b in backend.batches if all(len(i.tokens) == 1 for i in b)]
    ended = next(n for n, ids in enumerate(decode_steps) if len(ids) == 3)
    assert all(ids == list(range(len(ids))) for ids in decode_steps[ended + 1:])  # no gap once "ab" ended
    again = submit(loop, "ab-again", "ab")
    run_until_idle(loop)
    prompt = len(loop.backend.tokenize(ChatTemplate(CHATML).render([{"role": "user", "content": "ab"}]),
                                       add_bos=False))
    assert again[-1].num_cached_prompt_tokens >= prompt - 2  # its cache was kept, in slot 3
    assert_only_idle_caches(loop)


def test_a_flex_request_is_not_starved_by_a_steady_flow_of_priority_requests():
    backend = RecordingBackend(max_sequences=1)
    now = [0.0]
    loop = EngineLoop(backend, max_running=1, clock=lambda: now[0])
    finished_at: dict[str, float] = {}

    def submit_tier(rid: str, priority: int) -> None:
        prompt = ChatTemplate(CHATML).render([{"role": "user", "content": "ten chars!"}])
        tokens = tuple(backend.tokenize(prompt, add_bos=False))
        loop.add(Sequence(request=Request(rid, tokens, 100, GREEDY, priority=priority),
                          publish=lambda events, rid=rid: finished_at.setdefault(rid, now[0])
                          if isinstance(events[-1], Finished) else None,
                          rng=np.random.default_rng(0), detok=Detokenizer()))

    submit_tier("flex", 2)
    for i in range(200):  # a new priority request is always waiting; each step takes a second
        if sum(s.request.priority == 0 for s in [*loop.waiting, *loop._inbox]) < 2:
            submit_tier(f"priority-{i}", 0)
        loop._drain()
        loop._tick()
        now[0] += 1.0
        if "flex" in finished_at:
            break
    assert "flex" in finished_at, "the flex request never ran"
    assert MAX_WAIT_S < finished_at["flex"] < MAX_WAIT_S + 30  # admitted once it had waited MAX_WAIT_S
    assert sum(rid.startswith("priority") for rid in finished_at) >= 2  # priority went first until then


# ---- prompt logprobs (legacy completions' echo with logprobs) --------------------------------


def score(loop: EngineLoop, rid: str, message: str, *, max_tokens: int = 0) -> list[Event]:
    prompt = ChatTemplate(CHATML).render([{"role": "user", "content": message}])
    tokens = tuple(loop.backend.tokenize(prompt, add_bos=False))
    events: list[Event] = []
    loop.add(Sequence(request=Request(rid, tokens, max_tokens, GREEDY, prompt_logprobs=1), publish=events.extend,
                      rng=np.random.default_rng(0), detok=Detokenizer(), prompt_logprobs=[]))
    return events


def test_a_prompt_is_scored_once_whole_however_its_prefill_is_cut_or_preempted():
    message = "the quick brown fox jumps over the lazy dog " * 3
    whole = EngineLoop(FakeBackend(max_sequences=1), max_running=1)
    events = score(whole, "w", message)
    run_until_idle(whole)
    [prompt] = [e for e in events if isinstance(e, PromptLogprobs)]
    assert not [e for e in events if isinstance(e, TextDelta)]  # max_tokens 0: nothing generated
    assert events[-1].reason is FinishReason.LENGTH and events[-1].num_completion_tokens == 0
    assert events.index(prompt) < len(events) - 1  # before the Finished
    assert prompt.entries[0].logprob == 0.0 and prompt.entries[0].top == ()
    assert all(e.logprob <= 0 and len(e.top) == 1 for e in prompt.entries[1:])

    small = FakeBackend(max_sequences=1)
    small.max_batch_tokens = 16  # the prompt is read in chunks of 16
    chunked = EngineLoop(small, max_running=1)
    events = score(chunked, "c", message)
    chunked._drain()
    chunked._tick()  # one chunk read, then the sequence is preempted and starts again
    [seq] = chunked.running
    assert seq.status is Status.PREFILLING and seq.prompt_logprobs
    chunked._preempt(seq)
    run_until_idle(chunked)
    [again] = [e for e in events if isinstance(e, PromptLogprobs)]
    assert again.entries == prompt.entries  # every token once, the same numbers
