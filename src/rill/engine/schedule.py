"""What one engine step computes: a token for every decoding sequence (with its draft, when it
has a prediction to follow), then prefill chunks of the admitted prompts, oldest first, as many
tokens as the pacer allows next to the decoding streams (chunked prefill keeps running streams
flowing while a long prompt is read)."""

from __future__ import annotations

import numpy as np

from rill.backends.base import Backend, BatchItem
from rill.engine.pacing import PrefillPacer
from rill.engine.placement import MIN_PREFILL_CHUNK
from rill.engine.sequence import Sequence
from rill.engine.speculation import DraftCost
from rill.engine.types import Status

_NO_DRAFT = np.zeros(0, np.int32)


def plan_step(running: list[Sequence], backend: Backend, pacer: PrefillPacer,
              draft_cost: DraftCost) -> tuple[list[tuple[Sequence, BatchItem]], dict[int, int]]:
    """The step's items, each with its sequence. Prompt tokens the backend maps from cached
    blocks are free: they ride along outside the pacer's allowance, and are returned (how many,
    by seq_id) so that the pacer does not learn from them either."""
    plan = []
    draft_room = backend.max_batch_tokens - len(running)
    cost = draft_cost.relative(sum(1 for seq in running if seq.status is Status.DECODING))
    probe = draft_cost.probe_due()
    for seq in running:
        if seq.status is Status.DECODING:
            draft = _draft(seq, backend, draft_room, cost, probe)
            draft_room -= len(draft)
            probe = probe and not len(draft)  # one sequence's draft times them all
            plan.append((seq, BatchItem(seq.seq_id, (seq.generated[-1], *draft.tolist()), seq.num_cached,
                                        num_logits=1 + len(draft))))
    num_drafted = sum(item.num_logits - 1 for _, item in plan)
    budget = pacer.allowance(len(plan), num_drafted)
    room = backend.max_batch_tokens - len(plan) - num_drafted
    mapped_by_seq: dict[int, int] = {}
    for seq in running:
        if seq.status is Status.PREFILLING:
            # blocks the backend maps from another prompt's cache cost nothing: not paced
            # (asked of what fits in the step only, so a long prompt is not copied every step)
            ahead = min(seq.num_to_prefill, seq.num_cached + room)
            every_row = seq.prompt_logprobs is not None  # the prompt's logprobs: a row per token
            mapped = backend.mapped_prefix(seq.seq_id, seq.prefill_tokens(seq.num_cached, ahead),
                                           seq.num_cached) if room > 1 and not every_row else 0
            # mapped blocks go with one computed token at least: the one after them
            take = mapped + max(budget, int(mapped > 0))
            stop = min(seq.num_to_prefill, seq.num_cached + min(take, room))
            if seq.num_to_prefill - stop == 1:  # never leave a one-token tail
                stop -= 1
            if stop - seq.num_cached < min(MIN_PREFILL_CHUNK, seq.num_to_prefill - seq.num_cached):
                continue
            # logits are needed at the end of a fresh prompt; a resumed sequence already has its
            # next input token
            wants = stop == seq.num_to_prefill and not seq.generated
            plan.append((seq, BatchItem(seq.seq_id, seq.prefill_tokens(seq.num_cached, stop), seq.num_cached,
                                        num_logits=stop - seq.num_cached if every_row else int(wants))))
            mapped = min(mapped, stop - seq.num_cached - 1)  # a chunk's last token is computed
            mapped_by_seq[seq.seq_id] = max(mapped, 0)
            budget = max(0, budget - (stop - seq.num_cached - max(mapped, 0)))
            room -= stop - seq.num_cached
    return plan, mapped_by_seq


def _draft(seq: Sequence, backend: Backend, room: int, cost: float, probe: bool) -> np.ndarray:
    """The predicted tokens to verify with the sequence's next token: as many as pay (see
    Draft.propose), leaving room for the token sampled after them within max_tokens and the
    context."""
    if seq.draft is None or seq.forced:
        return _NO_DRAFT
    limit = min(room, seq.request.max_tokens - seq.num_generated - 1,
                backend.info.n_ctx - seq.num_cached - 1)
    return seq.draft.propose(seq.generated, limit, cost, probe) if limit > 0 else _NO_DRAFT
