"""The prefill pacer: chunk sizes learnt from timed steps keep decoding streams flowing."""

from __future__ import annotations

import pytest

from rill.backends.fake import FakeBackend
from rill.engine.loop import EngineLoop
from rill.engine.types import Finished, Status
from rill.engine.pacing import FIRST_CHUNK, MIN_PACED_CHUNK, REFRESH_STEPS, STEP_FLOOR_S, PrefillPacer
from rill.sampling.template import CHATML, ChatTemplate
from tests.unit.test_engine_loop import run_until_idle, submit, text_of


def trained(decode_s: float, per_token_s: float, decoding: int = 8, stall: float = 2.0) -> PrefillPacer:
    pacer = PrefillPacer(512, max_stall=stall)
    for _ in range(30):
        pacer.observe(decode_s, decoding, 0)
        pacer.observe(decode_s + 40 * per_token_s, decoding, 40)
    return pacer


def test_nothing_decoding_gets_the_whole_budget():
    assert PrefillPacer(512).allowance(0) == 512


def test_before_any_timing_chunks_are_the_first_chunk_size_within_the_room():
    pacer = PrefillPacer(512)
    assert pacer.allowance(4) == FIRST_CHUNK
    assert pacer.allowance(500) == 12


def test_with_only_decode_steps_timed_a_prompt_token_is_priced_like_a_decoding_one():
    pacer = PrefillPacer(512)
    pacer.observe(0.4, 8, 0)  # 50 ms per decoding stream's token
    assert pacer.allowance(8) == 8  # (2 * 0.4 - 0.4) / 0.05


def test_a_paced_step_takes_about_max_stall_decode_steps():
    pacer = trained(decode_s=0.2, per_token_s=0.004)  # slow steps: the ratio decides
    chunk = pacer.allowance(8)
    assert chunk == pytest.approx(50, abs=1)  # (2 - 1) * 0.2 s / 4 ms
    assert 0.2 + chunk * 0.004 <= 2.0 * 0.2 + 1e-9


def test_fast_steps_may_stretch_to_the_floor():
    pacer = trained(decode_s=0.005, per_token_s=0.001, decoding=1)
    assert pacer.allowance(1) == pytest.approx((STEP_FLOOR_S - 0.005) / 0.001, abs=1)


def test_a_lower_stall_ratio_gives_smaller_chunks_but_never_below_the_minimum():
    smooth = trained(decode_s=0.2, per_token_s=0.004, stall=1.5)
    assert smooth.allowance(8) < trained(decode_s=0.2, per_token_s=0.004).allowance(8)
    tiny = trained(decode_s=0.2, per_token_s=10.0)
    assert tiny.allowance(8) == MIN_PACED_CHUNK


def test_steps_too_fast_for_the_clock_do_not_break_the_pacer():
    pacer = PrefillPacer(512)
    pacer.observe(0.0, 4, 0)
    assert pacer.allowance(4) == 508
    pacer.observe(0.0, 4, 40)
    assert pacer.allowance(4) == 508


def test_estimates_follow_a_changing_machine():
    pacer = trained(decode_s=0.2, per_token_s=0.004)
    before = pacer.allowance(8)
    for _ in range(40):  # prefill got 4x slower (longer contexts, a busy neighbour)
        pacer.observe(0.2, 8, 0)
        pacer.observe(0.2 + 40 * 0.016, 8, 40)
    assert pacer.allowance(8) == pytest.approx(before / 4, abs=2)


def test_an_old_decode_timing_is_taken_again_before_prompt_tokens_are_priced():
    # Every step carries prefill while prompts keep arriving: the decode step grows (more
    # streams, longer contexts) unseen, and its growth must not be priced into the prompt tokens.
    pacer = trained(decode_s=0.010, per_token_s=0.001, decoding=1)
    chunk = pacer.allowance(1)
    for _ in range(REFRESH_STEPS):
        pacer.observe(0.060 + chunk * 0.001, 1, chunk)  # decode now costs 60 ms, a token still 1
    assert pacer.allowance(1) == 0  # a probe: the next step decodes only, and is timed
    assert pacer.num_probes == 1
    pacer.observe(0.060, 1, 0)
    assert pacer.decode_step_s == 0.060  # taken as timed, not smoothed with the old one
    for _ in range(15):  # prompt tokens are priced against the new decode step
        chunk = pacer.allowance(1)
        pacer.observe(0.060 + chunk * 0.001, 1, chunk)
    assert pacer.prefill_token_s == pytest.approx(0.001, rel=0.1)
    assert pacer.allowance(1) == pytest.approx((2 * 0.060 - 0.060) / 0.001, rel=0.1)


def test_a_decode_timing_stands_only_for_batches_of_about_its_size():
    pacer = trained(decode_s=0.040, per_token_s=0.001, decoding=8)
    assert pacer.allowance(9) > 0 and pacer.allowance(10) > 0  # within a quarter
    assert pacer.allowance(16) == 0  # twice the streams: timed again first
    pacer.observe(0.070, 16, 0)
    assert pacer.allowance(16) == pytest.approx((2 * 0.070 - 0.070) / 0.001, abs=1)


class TimedBackend(FakeBackend):
    """The fake backend on a simulated clock: a step costs 40 ms, plus 5 ms per one-token item
    and 1 ms per prefill token."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.now = 0.0
        self.steps: list[tuple[float, int]] = []  # (seconds, prefill tokens) of each step

    def forward(self, batch):
        prefill = sum(len(i.tokens) for i in batch if len(i.tokens) > 1)
        cost = 0.040 + 0.005 * sum(1 for i in batch if len(i.tokens) == 1) + 0.001 * prefill
        self.now += cost
        self.steps.append((cost, prefill))
        return super().forward(batch)


@pytest.mark.parametrize("stall", [2.0, 1.5])
def test_streams_keep_flowing_while_a_long_prompt_is_prefilled(stall):
    backend = TimedBackend(max_sequences=9, n_ctx=4096)
    loop = EngineLoop(backend, max_running=9, max_stall=stall, clock=lambda: backend.now)
    streams = [submit(loop, f"s{i}", f"stream {i} " * 30) for i in range(8)]
    while len(loop.running) < 8 or any(seq.status is not Status.DECODING for seq in loop.running):
        loop._drain(), loop._admit(), loop._step()
    for _ in range(5):  # the pacer times decode-only steps
        loop._step()
    decode_step = 0.040 + 8 * 0.005
    backend.steps.clear()
    long_prompt = submit(loop, "long", "a thousand tokens of prompt " * 36)
    run_until_idle(loop)
    with_prefill = [(cost, n) for cost, n in backend.steps if n]
    assert sum(n for _, n in with_prefill) >= 1000
    assert max(cost for cost, _ in with_prefill) <= stall * decode_step + 0.0015
    assert text_of(long_prompt) == "a thousand tokens of prompt " * 36
    assert [text_of(s) for s in streams] == [f"stream {i} " * 30 for i in range(8)]


class MappingBackend(TimedBackend):
    """TimedBackend with a cache shared by content, as the torch backend's named blocks: the
    tokens of `shared` that a prompt repeats from position 0 are mapped in whole 16-token blocks
    (never an item's last token) and cost nothing."""

    def __init__(self, shared: tuple[int, ...], **kwargs):
        super().__init__(**kwargs)
        self.shared = shared

    def _mapped(self, tokens, start: int, limit: int) -> int:
        n = 0
        while (start % 16 == 0 and n + 16 <= limit and start + n + 16 <= len(self.shared)
               and tuple(tokens[n : n + 16]) == self.shared[start + n : start + n + 16]):
            n += 16
        return n

    def mapped_prefix(self, seq_id, tokens, start):
        return self._mapped(tokens, start, len(tokens) - 1)

    def forward(self, batch):
        computed = sum(len(i.tokens) - self._mapped(i.tokens, i.start, len(i.tokens) - 1)
                       for i in batch if len(i.tokens) > 1)
        cost = 0.040 + 0.005 * sum(1 for i in batch if len(i.tokens) == 1) + 0.001 * computed
        self.now += cost
        self.steps.append((cost, computed))
        return FakeBackend.forward(self, batch)


CACHED_TEXT = "a thousand tokens of prompt " * 16


def eight_streams_and_a_cached_prompt(max_running: int = 9, max_batch_tokens: int = 512):
    """A MappingBackend whose shared tokens are CACHED_TEXT's prompt, and a loop with 8 streams
    decoding and the pacer trained on them."""
    shared = tuple(FakeBackend().tokenize(ChatTemplate(CHATML).render([{"role": "user", "content": CACHED_TEXT}]),
                                          add_bos=False))
    backend = MappingBackend(shared, max_sequences=max_running, n_ctx=4096)
    backend.max_batch_tokens = max_batch_tokens
    loop = EngineLoop(backend, max_running=max_running, clock=lambda: backend.now)
    streams = [submit(loop, f"s{i}", f"stream {i} " * 30) for i in range(8)]
    while len(loop.running) < 8 or any(seq.status is not Status.DECODING for seq in loop.running):
        loop._drain(), loop._admit(), loop._step()
    for _ in range(5):
        loop._step()
    return backend, loop, streams, shared


def test_a_prompt_whose_blocks_are_cached_is_not_paced_like_one_to_compute():
    backend, loop, streams, shared = eight_streams_and_a_cached_prompt()
    text = CACHED_TEXT
    allowance = loop.pacer.allowance(8)
    per_token = loop.pacer.prefill_token_s
    assert allowance < len(shared) // 4  # computed, the prompt would take 4+ paced steps

    cached = submit(loop, "cached", text)
    loop._drain(), loop._admit()
    steps = 0
    while loop.running[-1].status is Status.PREFILLING:
        loop._step()
        steps += 1
    assert steps == 1  # mapped blocks ride along outside the allowance
    assert backend.steps[-1][1] <= 16  # computed: the tail after the last whole block
    assert loop.pacer.prefill_token_s == pytest.approx(per_token, rel=0.5)  # not taught that tokens are free
    run_until_idle(loop)
    assert text_of(cached) == text
    finished = [e for e in cached if isinstance(e, Finished)]
    # usage's cached_tokens: every whole block before the prompt's last token
    assert finished[0].num_cached_prompt_tokens == (len(shared) - 1) // 16 * 16
    assert [text_of(s) for s in streams] == [f"stream {i} " * 30 for i in range(8)]


def test_a_cached_prompt_moves_even_when_a_prompt_to_compute_took_the_allowance():
    # a step holds the computed chunk and every mapped block
    backend, loop, streams, shared = eight_streams_and_a_cached_prompt(max_running=10, max_batch_tokens=1024)
    allowance = loop.pacer.allowance(8)
    computed = submit(loop, "computed", "nothing of this is cached " * 40)
    cached = submit(loop, "cached", CACHED_TEXT)
    loop._drain(), loop._admit()
    loop._step()
    by_id = {seq.request.id: seq for seq in loop.running}
    assert by_id["computed"].status is Status.PREFILLING  # paced: its chunk took the allowance
    assert by_id["cached"].num_cached > (len(shared) - 1) // 16 * 16  # every mapped block, and one more
    assert backend.steps[-1][1] <= allowance + 1
    run_until_idle(loop)
    assert text_of(cached) == CACHED_TEXT and text_of(computed) == "nothing of this is cached " * 40
