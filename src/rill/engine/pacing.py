"""How many prompt tokens one step may prefill while other sequences are decoding.

A step's time grows with the prefill tokens it carries, and every decoding stream waits for the
whole step. The pacer learns, from the steps it has timed, what a decode-only step costs and what
one prefill token adds, and sizes prefill chunks so that a step carrying prefill takes at most
`max_stall` times a decode-only step, or STEP_FLOOR_S if that is longer (a lone stream on a fast
machine need not wait for 3-token chunks). With nothing decoding, prefill takes the whole budget.

A prefill token's cost is what a step takes beyond a decode-only step of as many streams, so the
decode-only estimate must be current: while prompts arrive one after another every step carries
prefill, and an estimate from long ago (one stream, short contexts) would price the growth of
the decode step into the prompt tokens, shrinking chunks to the minimum and a short prompt's
prefill to ten steps. When the estimate is older than REFRESH_STEPS steps or was taken at another
batch size, the next step prefills nothing and times the decode step again (a probe).
"""

from __future__ import annotations

# Smoothing of the running estimates: recent steps weigh most, one outlier little.
_EMA = 0.2
# A step may always last this long: streams then still get 20 tokens/s, faster than anyone reads.
STEP_FLOOR_S = 0.05
# A chunk is never smaller than this, so a long prompt keeps moving even on a slow machine.
MIN_PACED_CHUNK = 4
# Until a step with prefill has been timed, chunks are this big.
FIRST_CHUNK = 64
# A decode-only estimate serves this many steps, and for batch sizes within a quarter (or one
# stream) of the one it was timed at; then a step without prefill times it again.
REFRESH_STEPS = 32


class PrefillPacer:
    def __init__(self, max_batch_tokens: int, max_stall: float = 2.0):
        self.max_batch_tokens = max_batch_tokens
        self.max_stall = max_stall
        self.decode_step_s: float | None = None  # a decode-only step
        self.prefill_token_s: float | None = None  # what one prefill token adds to a step
        self.num_probes = 0  # steps kept free of prefill to time the decode step again
        self._steps = 0  # steps observed
        self._decode_timed_at = 0  # the step and batch size of the last decode-only timing
        self._decode_batch = 0

    def allowance(self, num_decoding: int, num_drafted: int = 0) -> int:
        """Prompt tokens the next step may prefill, next to num_decoding one-token items and
        num_drafted draft tokens (which cost what prompt tokens do)."""
        room = self.max_batch_tokens - num_decoding - num_drafted
        if num_decoding == 0:
            return room
        if self.decode_step_s is None:
            return max(0, min(room, FIRST_CHUNK))
        if not self._decode_current(num_decoding):
            self.num_probes += 1
            return 0
        # Untimed yet, a prompt token is taken to cost what a decoding stream's token does: an
        # overestimate (prefill is the cheaper per token), so the first chunk errs small.
        per_token = self.prefill_token_s or self.decode_step_s / num_decoding
        if per_token <= 0:  # a clock too coarse to see a step: nothing to pace by
            return room
        step = max(self.max_stall * self.decode_step_s, STEP_FLOOR_S)
        paced = int((step - self.decode_step_s) / per_token) - num_drafted
        return max(0, min(room, max(MIN_PACED_CHUNK, paced)))

    def observe(self, seconds: float, num_decoding: int, num_prefill: int) -> None:
        """Learn from one timed step of num_decoding one-token items and num_prefill prompt tokens."""
        self._steps += 1
        if num_prefill == 0:  # an estimate for another batch size, or an old one, is replaced
            current = self.decode_step_s is not None and self._decode_current(num_decoding)
            self.decode_step_s = _smooth(self.decode_step_s, seconds) if current else seconds
            self._decode_timed_at, self._decode_batch = self._steps, num_decoding
            return
        if num_decoding and (self.decode_step_s is None or not self._decode_current(num_decoding)):
            return  # nothing current to tell the prompt tokens' share from the decoding streams'
        base = self.decode_step_s if num_decoding else 0.0
        per_token = max(seconds - base, 0.0) / num_prefill
        if per_token > 0:
            self.prefill_token_s = _smooth(self.prefill_token_s, per_token)

    def _decode_current(self, num_decoding: int) -> bool:
        """Whether the decode-only estimate stands for a step of num_decoding streams now."""
        recent = self._steps - self._decode_timed_at <= REFRESH_STEPS
        return recent and abs(num_decoding - self._decode_batch) <= max(1, self._decode_batch // 4)


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else old + _EMA * (new - old)
