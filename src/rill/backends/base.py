"""The Backend protocol the engine speaks: sequences, positions and tokens in, logits out.

No llama.cpp types cross it, so a PyTorch backend can stand behind it too. The backend owns its
KV cache; the engine only says which sequence a token belongs to and at which position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass(frozen=True, slots=True)
class BatchItem:
    """Tokens of one sequence to append to its KV cache, starting at position `start`."""

    seq_id: int
    tokens: Sequence[int]
    start: int
    # logits are returned for the item's last `num_logits` tokens: 1 for the next token, 0 for a
    # prefill chunk that is not the prompt's last, all of them for a speculative verification
    num_logits: int = 1


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the API layer needs to know about the model behind a backend."""

    name: str  # default served id
    n_ctx: int  # the most tokens (prompt + completion) one sequence may hold
    n_vocab: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool  # whether prompts start with the BOS token
    fingerprint: str  # identifies model + build, for `system_fingerprint`


class Backend(Protocol):
    info: ModelInfo
    max_sequences: int  # how many seq_ids (0..max_sequences-1) it can hold at once
    kv_capacity: int  # tokens the KV cache holds, all sequences together
    max_batch_tokens: int  # the most tokens one forward() may take

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        """Text -> token ids. With parse_special, control-token text (`<|im_start|>`) becomes the
        control token; without, it is tokenized as plain text."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token contributes to the output text (b"" for control tokens)."""
        ...

    def is_end_of_generation(self, token: int) -> bool: ...

    def control_tokens(self) -> tuple[str, ...]:
        """The texts that tokenize() reads as one control token with parse_special and as text
        without, each standing for its token wherever it appears (so that a prompt may be
        tokenized in pieces that start at one: prompt_tokens.py). Empty when the backend cannot
        promise that; prompts are then tokenized in one call."""
        ...

    def forward(self, batch: Sequence[BatchItem]) -> np.ndarray:
        """Append every item's tokens to its sequence's cache; return float32 logits, one row per
        token that wants them (each item's last num_logits tokens), in batch and token order.
        Raises BackendError on failure."""
        ...

    def mapped_prefix(self, seq_id: int, tokens: Sequence[int], start: int) -> int:
        """How many leading `tokens` (the rest of a prompt, to be appended at `start`) a forward()
        would map from cache blocks another prompt already computed instead of computing them:
        free prefill, which the engine does not count against a step's budget. 0 for a backend
        that shares no cache between sequences by content (llama.cpp: the engine moves whole
        caches between slots itself)."""
        ...

    def guidance_tokenizer(self) -> Any:
        """An llguidance tokenizer for this vocabulary, for constrained decoding (built on first
        use, then cached)."""
        ...

    def copy(self, src: int, dst: int) -> None:
        """Give sequence dst the same cache as src (shared cells where the backend can)."""
        ...

    def swap(self, a: int, b: int) -> None:
        """Sequences a and b exchange caches (either may be empty)."""
        ...

    def truncate(self, seq_id: int, keep: int) -> bool:
        """Keep only the first `keep` positions of a sequence's cache (prefix reuse). False if
        the backend cannot, in which case the engine releases the whole sequence instead."""
        ...

    def release(self, seq_id: int) -> None:
        """Forget a sequence's cache so its seq_id can be reused."""
        ...

    def close(self) -> None: ...

    @property
    def batch_invariant(self) -> bool:
        """Whether a token's logits are bit-identical however it is batched: alone, next to other
        sequences, or among several tokens of its own sequence (a prefill chunk, a verification).
        Speculative decoding (`prediction`) is exactly lossless only when it is."""
        ...


def swap_entries(caches: dict, a: int, b: int) -> None:
    """Keys a and b of a per-sequence dict exchange values; a missing one stays missing on the
    other side (an empty cache moves too). For backends whose swap() is bookkeeping only."""
    value_a, value_b = caches.pop(a, None), caches.pop(b, None)
    if value_a is not None:
        caches[b] = value_a
    if value_b is not None:
        caches[a] = value_b


class BackendError(RuntimeError):
    """Inference failed inside a backend."""


class KVCacheFull(BackendError):
    """forward() found no room in the KV cache; nothing was changed, the batch may be retried."""
