"""A deterministic scripted backend for fast tests.

Its vocabulary is the 256 byte values plus two ChatML control tokens, so multi-byte characters
are always split across tokens. It speaks ChatML, and its "model" echoes the last user message
and then ends: greedy decoding reproduces that message exactly, while the other tokens get
position-dependent pseudo-random logits so that temperature sampling and seeds matter.
A user message containing FAIL makes forward() fail after two generated tokens. With a chat
template that has a thinking section, a message "<think>plan</think>answer" is a model that
thinks (the echo is the whole turn).

Fault knobs (docs/faults.md), settable while the engine runs: forward() call number
`fail_on_forward` raises `fault`; call number `hang_on_forward` blocks (`hanging` is set
meanwhile) until `unhang` is set, then goes on (or raises, when it is also the failing call).
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from rill.backends.base import BackendError, BatchItem, KVCacheFull, ModelInfo, swap_entries
from rill.sampling.template import CHATML

IM_START, IM_END = 256, 257
SPECIALS = {"<|im_start|>": IM_START, "<|im_end|>": IM_END}
_USER = [IM_START, *b"user\n"]
_ASSISTANT = [IM_START, *b"assistant\n"]
TARGET_LOGIT = 8.0


def _last_index(seq: list[int], pattern: list[int]) -> int:
    """Index just past the last occurrence of pattern in seq, or -1."""
    n = len(pattern)
    for i in range(len(seq) - n, -1, -1):
        if seq[i : i + n] == pattern:
            return i + n
    return -1


class FakeBackend:
    max_batch_tokens = 512

    def __init__(self, *, n_ctx: int = 2048, max_sequences: int = 4, step_delay: float = 0.0,
                 name: str = "fake-echo", kv_capacity: int | None = None, chat_template: str = CHATML):
        self.info = ModelInfo(
            name=name, n_ctx=n_ctx, n_vocab=258, chat_template=chat_template, bos_token="",
            eos_token="<|im_end|>", add_bos=False, fingerprint="fp_fake",
        )
        self.max_sequences = max_sequences
        self.kv_capacity = kv_capacity or n_ctx * max_sequences
        self.step_delay = step_delay  # seconds per forward(): lets tests catch a stream mid-way
        self.num_forwards = 0
        self._seqs: dict[int, list[int]] = {}
        self._wake = threading.Event()  # set by close() to cut a delay short
        self._guidance: Any = None
        self.fail_on_forward: int | None = None
        self.fault: Exception = BackendError("injected fault")
        self.hang_on_forward: int | None = None
        self.hanging = threading.Event()  # a forward() is blocked on the hang
        self.unhang = threading.Event()

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        if not parse_special:
            return list(text.encode())
        out: list[int] = []
        i = 0
        while i < len(text):
            for name, tid in SPECIALS.items():
                if text.startswith(name, i):
                    out.append(tid)
                    i += len(name)
                    break
            else:
                out.extend(text[i].encode())
                i += 1
        return out

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else b""

    def is_end_of_generation(self, token: int) -> bool:
        return token == IM_END

    def control_tokens(self) -> tuple[str, ...]:
        return tuple(SPECIALS)

    def forward(self, batch: Sequence[BatchItem]) -> np.ndarray:
        if self.step_delay:
            self._wake.wait(self.step_delay)
        self.num_forwards += 1
        if self.num_forwards == self.hang_on_forward:
            self.hanging.set()
            self.unhang.wait()
            self.hanging.clear()
        if self.num_forwards == self.fail_on_forward:
            raise self.fault
        if sum(map(len, self._seqs.values())) + sum(len(i.tokens) for i in batch) > self.kv_capacity:
            raise KVCacheFull("no room in the KV cache")
        rows = []
        for item in batch:
            seq = self._seqs.setdefault(item.seq_id, [])
            if item.start != len(seq):
                raise BackendError(f"seq {item.seq_id}: position {item.start} != cache length {len(seq)}")
            if len(seq) + len(item.tokens) > self.info.n_ctx:
                raise BackendError("context full")
            seq.extend(item.tokens)
            rows.extend(self._logits(seq[:len(seq) - i]) for i in reversed(range(item.num_logits)))
        return np.stack(rows) if rows else np.empty((0, self.info.n_vocab), np.float32)

    def _logits(self, seq: list[int]) -> np.ndarray:
        reply_at = _last_index(seq, _ASSISTANT)
        user_at = _last_index(seq[: max(reply_at, 0)], _USER)
        generated = seq[reply_at:] if reply_at >= 0 else []
        message = seq[user_at:] if user_at >= 0 else []
        message = message[: message.index(IM_END)] if IM_END in message else message
        if FAIL in bytes(b for b in message if b < 256) and len(generated) >= 2:
            raise BackendError("scripted failure")
        target = [*message, IM_END]
        nxt = target[len(generated)] if len(generated) < len(target) else IM_END
        logits = np.random.default_rng(len(seq)).uniform(0.0, 6.0, self.info.n_vocab).astype(np.float32)
        logits[nxt] = TARGET_LOGIT
        return logits

    def guidance_tokenizer(self) -> Any:
        if self._guidance is None:
            import llguidance

            self._guidance = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_FakeVocab()))
        return self._guidance

    def mapped_prefix(self, seq_id: int, tokens: Sequence[int], start: int) -> int:
        return 0

    def copy(self, src: int, dst: int) -> None:
        self._seqs[dst] = list(self._seqs.get(src, []))

    def swap(self, a: int, b: int) -> None:
        swap_entries(self._seqs, a, b)

    def truncate(self, seq_id: int, keep: int) -> bool:
        if seq_id in self._seqs:
            del self._seqs[seq_id][keep:]
        return True

    def release(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)

    def close(self) -> None:
        self._wake.set()
        self.unhang.set()

    batch_invariant = True  # each row is a function of the tokens before it


FAIL = b"FAIL"


class _FakeVocab:
    """The fake vocabulary as llguidance's TokenizerWrapper wants it (control tokens marked 0xff)."""

    def __init__(self) -> None:
        self.eos_token_id = IM_END
        self.bos_token_id = None
        self.tokens = [bytes([b]) for b in range(256)] + [b"\xff<|im_start|>", b"\xff<|im_end|>"]
        self.special_token_ids = [IM_START, IM_END]

    def __call__(self, data: bytes) -> list[int]:
        return list(data)
