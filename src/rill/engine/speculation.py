"""Predicted outputs (`prediction`): the predicted text's tokens as draft tokens for one sequence.

While the output follows the prediction, each engine step feeds the sequence's last token and the
next few predicted tokens in one item, gets logits at every position, and samples each position
exactly as one-token decoding would; the predicted tokens that equal what was sampled are kept
(EngineLoop._verify). When the output leaves the prediction (an identifier renamed), drafting
stops until the last tokens generated are found again in the prediction, and resumes from there.
How many tokens to draft weighs the estimated chance of each being kept against what a drafted
token costs on this machine and in this batch: where the step is compute-bound (a CPU with many
streams), drafting cannot pay and stops.
"""

from __future__ import annotations

import numpy as np

from rill.engine.pacing import PrefillPacer

MAX_DRAFT = 32  # predicted tokens verified per step at most
# The chance that the next predicted token is the model's, as believed at the start and after a
# realignment on n matching tokens (a lone common token is often a coincidence); then learnt from
# every token generated while on the prediction, drafted or not.
START_RATE = 0.8
REALIGNED_RATE = {1: 0.35, 2: 0.6, 3: 0.8}
RATE_EMA = 0.2
# Realignment looks for the last few generated tokens in the prediction, longest match first.
MAX_NGRAM = 3
SINGLE_TOKEN_SLACK = 4

# A drafted token's cost relative to a decoding sequence's share of a step, until timed (about
# what 2 CPU cores measured for the embedded model: docs/benchmarks.md).
DEFAULT_DRAFT_COST = 0.4
_COST_EMA = 0.2
_COST_DROP = 0.5
_MAX_JUMP = 4.0  # one timing counts as at most this many times the estimate
# While the price keeps every draft out, one sequence on its prediction still verifies a few
# tokens every so many steps: without timings a price that a slow moment set too high would
# never come down again (seen on CI: drafting stopped for the rest of the server's life). On a
# compute-bound batch of 16 streams this is under 2% of the steps' tokens.
PROBE_EVERY = 16
PROBE_LENGTH = 4

_EMPTY = np.zeros(0, np.int32)


def best_length(rate: float, cost: float, limit: int) -> int:
    """The draft length d that maximises expected tokens per unit of step time: a step with d
    draft tokens yields 1 + rate + ... + rate^d tokens (each is kept only if all before it were)
    and takes 1 + cost * d one-token steps, `cost` being what one more token in the step costs
    relative to the sequence's share of a plain decode step. The shortest of equals."""
    if limit <= 0:
        return 0
    d = np.arange(limit + 1)
    expected = np.cumsum(float(rate) ** d)
    return int(np.argmax(expected / (1.0 + cost * d)))


class DraftCost:
    """What one drafted token adds to a step, relative to one decoding sequence's share of a plain
    decode step, both timed: the `cost` best_length weighs drafts by. A prompt token's cost (the
    pacer's) stands in for a draft token's until verifications are timed; DEFAULT_DRAFT_COST
    until a decode step is. On a CPU the share shrinks as more sequences decode together, so
    drafting pays less the fuller the batch.

    A verification step is measured against a plain step of as many decoding sequences: the
    pacer's running estimate of a decode step mixes batch sizes, and a 16-sequence step taken as
    the excess over a 1-sequence baseline would price drafts so high that drafting stops, and with
    it the measurements that could correct the price."""

    def __init__(self, pacer: PrefillPacer, fixed: float | None = None):
        self._pacer = pacer
        self.fixed = fixed  # tests: a cost that does not depend on timings
        self.draft_token_s: float | None = None
        self.decode_step_s: dict[int, float] = {}  # plain decode step time by number of sequences
        self.steps_undrafted = 0  # plain decode steps timed since the last one with drafts

    def probe_due(self) -> bool:
        """Whether the next step should verify a short draft, priced out or not, to time it."""
        return self.fixed is None and self.steps_undrafted >= PROBE_EVERY

    def relative(self, num_decoding: int) -> float:
        if self.fixed is not None:
            return self.fixed
        per_token = self.draft_token_s or self._pacer.prefill_token_s
        step = self.decode_step_s.get(num_decoding) or self._pacer.decode_step_s
        if not (per_token and step and num_decoding):
            return DEFAULT_DRAFT_COST
        return per_token * num_decoding / step

    def observe(self, seconds: float, num_decoding: int, num_drafted: int) -> None:
        """A timed step of num_decoding sequences, decodes and verifications only, holding
        num_drafted draft tokens (logits at every verified position make one dearer than a
        prompt token). One outlier (a descheduled thread) moves the estimate a bounded step."""
        if not num_drafted:
            self.steps_undrafted += 1
            old = self.decode_step_s.get(num_decoding)
            self.decode_step_s[num_decoding] = seconds if old is None else old + _COST_EMA * (seconds - old)
            return
        self.steps_undrafted = 0
        base = self.decode_step_s.get(num_decoding)
        if base is None:
            return  # nothing to tell the drafts' share of this step from the sequences'
        per_token = max(seconds - base, 0.0) / num_drafted
        old = self.draft_token_s
        if old is None:
            self.draft_token_s = per_token
            return
        # interruptions only ever slow a step: a cheaper timing is believed sooner than a dearer
        weight = _COST_EMA if per_token > old else _COST_DROP
        self.draft_token_s = old + weight * (min(per_token, _MAX_JUMP * old) - old)


class Draft:
    """Where a sequence's output stands against its prediction, and what to propose next."""

    __slots__ = ("tokens", "pos", "anchor", "confirmed", "num_off", "rate", "max_length",
                 "num_accepted", "num_rejected")

    def __init__(self, tokens: np.ndarray, max_length: int = MAX_DRAFT):
        self.tokens = tokens.astype(np.int32, copy=False)
        self.pos = 0  # index of the prediction token the output is expected to continue with; -1: off it
        self.anchor = 0  # where the output left the prediction: realignment searches from here on
        self.confirmed = True  # the output has continued the prediction since the last realignment
        self.num_off = 0  # tokens generated since the output left the prediction
        self.rate = START_RATE  # estimated chance that the next predicted token is kept
        self.max_length = max_length
        self.num_accepted = 0  # draft tokens the output kept
        self.num_rejected = 0  # draft tokens verified and not kept

    def propose(self, generated: list[int], limit: int, cost: float, probe: bool = False) -> np.ndarray:
        """The draft for the next step (maybe empty), at most `limit` tokens, as long as pays
        at this cost of a drafted token (see best_length); with probe, PROBE_LENGTH tokens at
        least (see DraftCost.probe_due)."""
        if self.pos < 0:
            self.pos, matched = self._realign(generated)
            if self.pos < 0:
                return _EMPTY
            self.confirmed = False
            self.rate = (self.rate + REALIGNED_RATE[matched]) / 2
        limit = min(limit, self.max_length, self.tokens.size - self.pos)
        length = best_length(self.rate, cost, limit)
        if probe:
            length = max(length, min(PROBE_LENGTH, limit))
        return self.tokens[self.pos : self.pos + length]

    def observe(self, token: int) -> None:
        """One generated token: the output stays on the prediction or leaves it here."""
        if self.pos < 0:
            self.num_off += 1
            return
        kept = self.pos < self.tokens.size and self.tokens[self.pos] == token
        self.rate += RATE_EMA * (kept - self.rate)
        if kept:
            self.pos += 1
            self.confirmed = True
            return
        # a realignment that the very next token contradicts was a coincidence: the output
        # left the prediction where it did before, not there
        if self.confirmed:
            self.anchor, self.num_off = self.pos, 0
        self.pos = -1
        self.num_off += 1

    def verifying(self, num_drafted: int) -> None:
        """A verification of num_drafted tokens ran: all count as rejected until kept."""
        self.num_rejected += num_drafted

    def kept(self) -> None:
        """One verified draft token was kept in the output."""
        self.num_accepted += 1
        self.num_rejected -= 1

    def _realign(self, generated: list[int]) -> tuple[int, int]:
        """The prediction index just past the latest generated tokens' occurrence in it: the
        longest suffix (up to MAX_NGRAM tokens) that ends at or after the anchor, the nearest
        such match first; a full MAX_NGRAM match before the anchor (the output repeating
        itself) only when there is none. A lone token matches only about as far past the anchor
        as the output has gone since leaving the prediction (a word replaced by one of similar
        length): further on, a common token is likelier a coincidence. Returns (index, tokens
        matched), or (-1, 0) when nothing matches."""
        for n in range(min(MAX_NGRAM, len(generated)), 0, -1):
            ends = self._matches(generated[-n:])
            after = ends[ends >= self.anchor]
            if n == 1:
                after = after[after <= self.anchor + 2 * self.num_off + SINGLE_TOKEN_SLACK]
            if after.size:
                return int(after[0]) + 1, n
            if n == MAX_NGRAM and ends.size:
                return int(ends[-1]) + 1, n
        return -1, 0

    def _matches(self, suffix: list[int]) -> np.ndarray:
        """Indices where the suffix's last token sits in a full occurrence of it, ascending."""
        tokens, n = self.tokens, len(suffix)
        ends = np.flatnonzero(tokens == suffix[-1])
        ends = ends[ends >= n - 1]
        for k in range(1, n):
            ends = ends[tokens[ends - k] == suffix[-1 - k]]
        return ends
