"""`prediction` as speculative decoding, on the fake backend: the output with a prediction is the
output without (greedy, seeded sampling, penalties, logprobs, stops, length caps, next to other
requests), drafts follow the prediction and find it again after the output leaves it, rejected
positions leave the cache, and the usage counts add up to the draft tokens verified."""

from __future__ import annotations

from typing import Sequence as Seq

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rill.backends.base import BatchItem
from rill.backends.fake import FakeBackend
from rill.engine.detokenize import Detokenizer
from rill.engine.loop import EngineLoop
from rill.engine.sequence import Sequence
from rill.engine.pacing import PrefillPacer
from rill.engine.speculation import MAX_DRAFT, PROBE_EVERY, PROBE_LENGTH, Draft, DraftCost, best_length
from rill.engine.types import Event, Finished, FinishReason, Request, SamplingParams, TextDelta
from rill.sampling.template import CHATML, ChatTemplate
from tests.unit.test_engine_loop import run_until_idle

GREEDY = SamplingParams(temperature=0.0)


class CheckingBackend(FakeBackend):
    """The fake backend, recording the draft tokens each sequence had verified, and checking
    that a verification only ever starts where the sequence's kept cache ends (the fake raises
    when a position is not the cache's length, so a rejected position left behind fails)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drafted: dict[int, int] = {}
        self.batches: list[list[BatchItem]] = []

    def forward(self, batch: Seq[BatchItem]) -> np.ndarray:
        self.batches.append(list(batch))
        for item in batch:
            if item.num_logits > 1:
                assert item.num_logits == len(item.tokens)  # logits at every position
                self.drafted[item.seq_id] = self.drafted.get(item.seq_id, 0) + len(item.tokens) - 1
        return super().forward(batch)


def prompt(loop: EngineLoop, message: str) -> tuple[int, ...]:
    text = ChatTemplate(CHATML).render([{"role": "user", "content": message}])
    return tuple(loop.backend.tokenize(text, add_bos=False))


def submit(loop: EngineLoop, rid: str, message: str, prediction: str | None = None, *,
           sampling: SamplingParams = GREEDY, max_tokens: int = 10_000, stop: tuple[str, ...] = (),
           top_logprobs: int | None = None, seed: int = 0) -> list[Event]:
    predicted = tuple(loop.backend.tokenize(prediction, add_bos=False, parse_special=False)) if prediction else ()
    request = Request(rid, prompt(loop, message), max_tokens, sampling, stop, top_logprobs=top_logprobs,
                      prediction=predicted)
    events: list[Event] = []
    loop.add(Sequence(request=request, publish=events.extend, rng=np.random.default_rng(seed),
                      detok=Detokenizer(stop), draft=Draft(np.asarray(predicted, np.int32)) if predicted else None))
    return events


def finished(events: list[Event]) -> Finished:
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def text_of(events: list[Event]) -> str:
    finished(events)
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def logprobs_of(events: list[Event]) -> list:
    return [lp for e in events if isinstance(e, TextDelta) for lp in e.logprobs]


def generate(message: str, prediction: str | None, *, draft_cost: float = 0.4,
             **kwargs) -> tuple[list[Event], CheckingBackend, int]:
    """One request alone; drafted tokens cost what 2 CPU cores measured (not the fake's timings,
    so that the drafts, unlike the output, are the same every run)."""
    backend = CheckingBackend(max_sequences=2)
    loop = EngineLoop(backend, max_running=2, draft_cost=draft_cost)
    events = submit(loop, "r", message, prediction, **kwargs)
    steps = run_until_idle(loop)
    return events, backend, steps


MESSAGE = "def total(items):\n    return sum(item.price for item in items)\n"

CASES = {
    "exact": MESSAGE,
    "wrong from the first token": "zzz" + MESSAGE,
    "right only at the end": "x" * 40 + MESSAGE[-20:],
    "one identifier renamed": MESSAGE.replace("items", "things"),
    "a line missing": MESSAGE.split("\n")[0] + "\n",
    "an inserted line": MESSAGE.replace("\n", "\n    # note\n", 1),
    "longer than the output": MESSAGE * 3,
    "shorter than the output": MESSAGE[:12],
    "unrelated": "SELECT * FROM t WHERE a = 1;",
    "a single token": "d",
    "the output twice over, shifted": MESSAGE[5:] + MESSAGE,
}


@pytest.mark.parametrize("prediction", list(CASES.values()), ids=list(CASES))
def test_greedy_output_is_identical_with_any_prediction_and_the_counts_add_up(prediction):
    plain, _, plain_steps = generate(MESSAGE, None)
    events, backend, steps = generate(MESSAGE, prediction)
    assert text_of(events) == text_of(plain) == MESSAGE
    done = finished(events)
    assert done.reason is FinishReason.STOP and done.num_completion_tokens == finished(plain).num_completion_tokens
    drafted = sum(backend.drafted.values())
    assert done.num_accepted_prediction_tokens + done.num_rejected_prediction_tokens == drafted
    assert done.num_accepted_prediction_tokens <= done.num_completion_tokens
    if prediction == MESSAGE:  # all of it accepted, in far fewer steps
        verifications = sum(1 for batch in backend.batches for item in batch if item.num_logits > 1)
        # every token was a draft token, kept, but the first (from the prompt's logits) and the
        # one each verification samples after its draft, except the last's (the end of the turn)
        assert done.num_accepted_prediction_tokens == len(MESSAGE) - verifications
        assert done.num_rejected_prediction_tokens == 0
        assert steps < plain_steps / 3


def test_a_renamed_identifier_realigns_and_most_of_the_prediction_is_accepted():
    original = "for item in items:\n    total += item.price * item.count\nreturn total\n"
    edited = original.replace("item", "row")
    plain, _, plain_steps = generate(edited, None)
    events, _, steps = generate(edited, original)
    assert text_of(events) == text_of(plain) == edited
    done = finished(events)
    # the draft finds the prediction again after each renamed word (byte tokens make a few
    # coincidental realignments: "r" of "row" occurs in "price")
    assert done.num_accepted_prediction_tokens > 0.5 * len(edited)
    assert done.num_rejected_prediction_tokens < done.num_accepted_prediction_tokens / 2
    assert steps < 0.6 * plain_steps


@settings(max_examples=60, deadline=None)
@given(message=st.text(alphabet="abcde \n()", min_size=1, max_size=60),
       edits=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5), st.text(alphabet="abcdxy \n", max_size=6)),
                      max_size=4))
def test_greedy_equality_holds_for_random_edits_of_the_output(message, edits):
    prediction = message
    for at, cut, insert in edits:  # splice: replace `cut` characters at `at` by `insert`
        at = min(at, len(prediction))
        prediction = prediction[:at] + insert + prediction[at + cut:]
    events, backend, _ = generate(message, prediction or None)
    assert text_of(events) == message
    done = finished(events)
    assert done.num_accepted_prediction_tokens + done.num_rejected_prediction_tokens == sum(backend.drafted.values())


def test_seeded_sampling_penalties_bias_and_logprobs_are_the_same_with_a_prediction():
    sampling = SamplingParams(temperature=0.4, top_p=0.9, seed=7, frequency_penalty=0.3, presence_penalty=0.2,
                              logit_bias=((ord("e"), 1.5),))
    kwargs = dict(sampling=sampling, top_logprobs=3, seed=7, max_tokens=80)
    plain, _, _ = generate(MESSAGE, None, **kwargs)
    events, _, _ = generate(MESSAGE, MESSAGE, **kwargs)
    assert text_of(events) == text_of(plain)
    assert logprobs_of(events) == logprobs_of(plain)  # exact: the same logits, row by row
    assert finished(events).num_accepted_prediction_tokens > 0


def test_sampling_keeps_the_distribution_of_the_first_token():
    """Unseeded: over many requests, how often the first token is the predicted one matches its
    probability under the model (the fake's logits), as without a prediction."""
    backend = FakeBackend()
    loop = EngineLoop(backend, max_running=1)
    tokens = prompt(loop, "a")
    row = backend._logits(list(tokens))
    p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
    runs = 400
    hits = 0
    for i in range(runs):
        events = submit(loop, f"r{i}", "a", "a", sampling=SamplingParams(temperature=1.0), max_tokens=1, seed=i)
        run_until_idle(loop)
        hits += text_of(events) == "a"
    expected = p[ord("a")] * runs
    assert abs(hits - expected) < 4 * np.sqrt(expected * (1 - p[ord("a")]))  # 4 sigma


def test_stop_strings_and_the_length_cap_end_a_verification_midway():
    events, _, _ = generate(MESSAGE, MESSAGE, stop=("sum(",))
    assert text_of(events) == MESSAGE[: MESSAGE.index("sum(")]
    done = finished(events)
    assert done.reason is FinishReason.STOP
    capped, backend, _ = generate(MESSAGE, MESSAGE, max_tokens=10)
    assert text_of(capped) == MESSAGE[:10] and finished(capped).reason is FinishReason.LENGTH
    # no draft ran past the cap: the last verification held at most the tokens still allowed
    assert finished(capped).num_accepted_prediction_tokens + finished(capped).num_rejected_prediction_tokens \
        == sum(backend.drafted.values()) <= 9


def test_drafts_lengthen_as_the_prediction_proves_right_up_to_the_maximum():
    message = "abcdefghij" * 20
    _, backend, _ = generate(message, message)
    lengths = [item.num_logits - 1 for batch in backend.batches for item in batch if item.num_logits > 1]
    assert lengths == sorted(lengths[:-1]) + lengths[-1:]  # never shorter while all is kept (but the tail)
    assert lengths[0] < 8 and max(lengths) == MAX_DRAFT


def test_a_prediction_the_answer_does_not_follow_costs_few_verifications():
    message = "a quite different answer from the one predicted, all the way through"
    plain, _, plain_steps = generate(message, None)
    events, backend, steps = generate(message, "SELECT name FROM users WHERE id = 7 AND active;")
    assert text_of(events) == message
    assert steps <= plain_steps + 3
    assert sum(backend.drafted.values()) < 12


def test_when_drafted_tokens_cost_as_much_as_a_decoding_sequence_nothing_is_drafted():
    # a compute-bound batch: one more token costs what another sequence's token does
    events, backend, _ = generate(MESSAGE, MESSAGE, draft_cost=1.0)
    assert text_of(events) == MESSAGE
    assert sum(backend.drafted.values()) == 0
    assert finished(events).num_accepted_prediction_tokens == 0


def test_the_draft_cost_is_learnt_from_the_pacers_timings():
    loop = EngineLoop(FakeBackend(max_sequences=4), max_running=4)
    assert loop.draft_cost.relative(1) == 0.4  # nothing timed yet: the default
    for i in range(2):
        submit(loop, f"r{i}", "a message long enough to keep decoding for a while")
    while sum(seq.status.value == "decoding" for seq in loop.running) < 2:
        loop._drain(), loop._tick()
    loop.pacer.prefill_token_s, loop.pacer.decode_step_s = 0.006, 0.030
    # a drafted token costs 6 ms; each of the 2 decoding sequences' share of a step is 15 ms
    assert loop.draft_cost.relative(2) == pytest.approx(0.4)
    loop.pacer.decode_step_s = 0.012
    assert loop.draft_cost.relative(2) == pytest.approx(1.0)  # compute-bound: drafting will not pay
    # timed verifications replace the prompt token's stand-in, measured against a plain step of
    # as many sequences: (26 ms - 12 ms) / 7 drafted
    loop.draft_cost.observe(0.012, 2, 0)
    loop.draft_cost.observe(0.026, 2, 7)
    assert loop.draft_cost.draft_token_s == pytest.approx(0.002)
    assert loop.draft_cost.relative(2) == pytest.approx(2 * 0.002 / 0.012)


def test_a_full_batchs_verifications_are_not_priced_against_a_lone_sequences_step():
    cost = DraftCost(PrefillPacer(512))
    cost.observe(0.007, 1, 0)  # one sequence decoding alone: 7 ms
    cost.observe(0.066, 16, 5)  # 16 sequences, one drafting 5 tokens: no 16-sequence baseline yet
    assert cost.draft_token_s is None
    cost.observe(0.060, 16, 0)
    cost.observe(0.066, 16, 5)
    assert cost.draft_token_s == pytest.approx(0.0012)
    assert cost.relative(1) == pytest.approx(0.0012 / 0.007)  # drafting alone still pays
    assert cost.relative(16) == pytest.approx(16 * 0.0012 / 0.060)


def test_one_slow_step_moves_the_draft_cost_a_bounded_step():
    cost = DraftCost(PrefillPacer(512))
    cost.observe(0.010, 1, 0)
    cost.observe(0.014, 1, 4)  # 1 ms a draft token
    cost.observe(1.010, 1, 4)  # descheduled for a second
    assert cost.draft_token_s == pytest.approx(0.001 + 0.2 * (0.004 - 0.001))


class TimedBackend(CheckingBackend):
    """A step takes step_s plus draft_token_s per drafted token, on a clock of the test's own."""

    def __init__(self, *, step_s: float, draft_token_s: float, **kwargs):
        super().__init__(**kwargs)
        self.now, self.step_s, self.draft_token_s = 0.0, step_s, draft_token_s

    def clock(self) -> float:
        return self.now

    def forward(self, batch: Seq[BatchItem]) -> np.ndarray:
        self.now += self.step_s + self.draft_token_s * sum(max(item.num_logits - 1, 0) for item in batch)
        return super().forward(batch)


def test_a_draft_price_a_slow_moment_set_too_high_comes_down_again():
    backend = TimedBackend(step_s=0.010, draft_token_s=0.002, max_sequences=2)
    loop = EngineLoop(backend, max_running=2, clock=backend.clock)
    # a descheduled thread priced a drafted token at 5 decode steps: nothing pays at that price
    loop.draft_cost.observe(0.010, 1, 0)
    loop.draft_cost.draft_token_s = 0.050
    message = "abcdefghij" * 20
    events = submit(loop, "r", message, message)
    run_until_idle(loop)
    assert text_of(events) == message
    steps = [sum(max(item.num_logits - 1, 0) for item in batch) for batch in backend.batches]
    first = next(i for i, n in enumerate(steps) if n)
    # undrafted steps until a probe is due (the first one sampled the prompt's token), then a
    # short probe whose timing (2 ms a token) brings the price down until drafts pay again
    assert first == PROBE_EVERY and steps[first] == PROBE_LENGTH
    assert loop.draft_cost.relative(1) == pytest.approx(0.2, rel=0.15)  # 2 ms / 10 ms
    assert max(steps) > 2 * PROBE_LENGTH
    assert finished(events).num_accepted_prediction_tokens > len(message) // 2


def test_a_fixed_draft_price_is_never_probed():
    cost = DraftCost(PrefillPacer(512), fixed=1.0)
    for _ in range(3 * PROBE_EVERY):
        cost.observe(0.010, 1, 0)
    assert not cost.probe_due()


@pytest.mark.parametrize("rate, cost, limit, expected", [
    (0.9, 0.37, 32, 4),     # 1 + .9 + .81 + ... over 1 + .37 d peaks at d = 4
    (0.99, 0.37, 32, 17),
    (0.998, 0.37, 32, 32),  # nearly certain: as long as allowed
    (0.99, 0.37, 5, 5),
    (0.3, 0.37, 32, 0),     # likelier wrong than the cost: no draft
    (0.999, 1.0, 32, 0),    # a draft token costs a whole decoding sequence's share: never pays
    (0.8, 0.0, 7, 7),       # free drafts: always the most
    (0.9, 0.37, 0, 0),
])
def test_best_length(rate, cost, limit, expected):
    assert best_length(rate, cost, limit) == expected


def test_a_predicting_sequence_runs_in_the_same_steps_as_an_ordinary_one():
    backend = CheckingBackend(max_sequences=2)
    loop = EngineLoop(backend, max_running=2)
    ordinary = submit(loop, "plain", "an ordinary request decoded one token per step")
    predicting = submit(loop, "predicted", MESSAGE, MESSAGE)
    run_until_idle(loop)
    assert text_of(ordinary) == "an ordinary request decoded one token per step"
    assert text_of(predicting) == MESSAGE
    mixed = [b for b in backend.batches if {len(i.tokens) == 1 for i in b} == {True, False}
             and any(i.num_logits > 1 for i in b)]
    assert mixed  # a step held a one-token decode and a verification together


class TestDraft:
    def tokens(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode(), np.uint8).astype(np.int32)

    def follow(self, draft: Draft, output: str) -> list[int]:
        """Feed the output token by token; the draft proposed before each token, as positions."""
        generated: list[int] = []
        proposed = []
        for ch in output.encode():
            proposal = draft.propose(generated, 100, 0.0)
            proposed.append(draft.pos if proposal.size else -1)
            generated.append(ch)
            draft.observe(ch)
        return proposed

    def test_a_substituted_word_is_rejoined_after_it(self):
        draft = Draft(self.tokens("x = old(1)"))
        positions = self.follow(draft, "x = new(1)")
        # "x = " follows the prediction; "new" leaves it; "(" finds the "(" after "old"
        assert positions[:4] == [0, 1, 2, 3]
        assert positions[-2:] == [8, 9]  # "1" and ")" drafted from the prediction's own

    def test_nothing_is_drafted_while_no_generated_token_occurs_in_the_prediction(self):
        draft = Draft(self.tokens("abc"))
        assert self.follow(draft, "xyz") == [0, -1, -1]

    def test_the_longest_recent_match_wins_over_a_nearer_shorter_one(self):
        draft = Draft(self.tokens("ab_x ab_y"))
        generated = list(b"zz ab_")
        draft.observe(ord("z"))  # leaves the prediction at 0
        assert draft.propose(generated, 100, 0.0).tolist() == list(b"x ab_y")
        assert draft.pos == 3

    def test_counts(self):
        draft = Draft(self.tokens("abcdef"))
        draft.verifying(4)
        draft.kept(), draft.kept()
        assert (draft.num_accepted, draft.num_rejected) == (2, 2)
