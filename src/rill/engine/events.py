"""A sequence's output as events: text deltas (a thinking model's reasoning split off) and the
Finished event with its counts."""

from __future__ import annotations

import time

from rill.engine.sequence import Sequence
from rill.engine.types import Finished, FinishReason, TextDelta


def emit_text(seq: Sequence, text: str, *, final: bool = False) -> None:
    """New text for the client, into the sequence's outbox; a thinking model's reasoning is split
    off, and its tokens carry no logprobs (`final`: generation ends, nothing is held back)."""
    reasoning = ""
    if seq.thinking is not None:
        reasoning, text = seq.thinking.feed(text)
        if final:
            more_reasoning, more_text = seq.thinking.finish()
            reasoning, text = reasoning + more_reasoning, text + more_text
    if text or reasoning:
        logprobs = tuple(seq.logprobs) if text else ()
        seq.outbox.append(TextDelta(text, seq.num_unreported, seq.index, logprobs, reasoning))
        seq.num_unreported = 0
        seq.logprobs.clear()


def finished_event(seq: Sequence, reason: FinishReason) -> Finished:
    queued = (seq.admitted_at or time.monotonic()) - seq.submitted_at
    draft = seq.draft
    return Finished(reason, seq.num_prompt_tokens, seq.num_generated, seq.index, seq.num_reused,
                    queue_seconds=max(queued, 0.0),
                    num_accepted_prediction_tokens=draft.num_accepted if draft else 0,
                    num_rejected_prediction_tokens=draft.num_rejected if draft else 0,
                    num_reasoning_tokens=seq.thinking.num_tokens if seq.thinking else 0,
                    stop_sequence=seq.detok.matched_stop if reason is FinishReason.STOP else None)
