"""llama.cpp through llama-cpp-python's low-level API: one context, a seq_id per sequence.

The batch arrays are numpy buffers Rill owns, so filling a batch is a few slice assignments
rather than a Python loop per token; logits come back as one copied numpy block per step.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

import llama_cpp as ll
import numpy as np

from rill import __version__
from rill.backends.base import BackendError, BatchItem, KVCacheFull, ModelInfo
from rill.backends.llama_vocab import LlamaVocab, VocabMethods
from rill.config import ModelConfig, default_threads

log = logging.getLogger("rill.llama")

# ggml_log_level: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


@ll.llama_log_callback
def _log_callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    # llama.cpp is chatty on load; its info lines go to debug, warnings and errors stay visible.
    msg = text.decode("utf-8", "replace").rstrip()
    if msg:
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", msg)


_initialised = False


def init_llama() -> None:
    global _initialised
    if not _initialised:
        ll.llama_log_set(_log_callback, ctypes.c_void_p(0))
        ll.llama_backend_init()
        _initialised = True


def terminal_progress(label: str) -> Callable[[float], None]:
    """A progress line on stderr: redrawn in place on a terminal, every 25% otherwise."""
    tty = sys.stderr.isatty()
    shown = [-1]

    def show(fraction: float) -> None:
        pct = int(fraction * 100)
        if tty and pct != shown[0]:
            bar = "#" * (pct // 4)
            print(f"\rloading {label} [{bar:<25}] {pct:3d}%", end="\n" if pct >= 100 else "",
                  file=sys.stderr, flush=True)
        elif not tty and pct // 25 != shown[0] // 25:
            print(f"loading {label}: {pct}%", file=sys.stderr, flush=True)
        shown[0] = pct

    return show


def llamafile_enabled() -> bool:
    """Whether this llama.cpp build multiplies matrices of two or more columns with llamafile's
    tinyBLAS, which sums in another order than ggml's dot product for one column."""
    info = ll.llama_print_system_info().decode("utf-8", "replace")
    return "LLAMAFILE = 1" in info


def row_order_flash_attention() -> bool:
    """Whether this llama-cpp-python is Rill's build, whose flash attention sums every query row
    alone and in key order, whatever the batch (scripts/llama-cpp-row-order-fa.patch)."""
    return ll.__version__.endswith("+rill.rowfa")


class LlamaBackend(VocabMethods):
    def __init__(self, path: Path, config: ModelConfig, *, name: str,
                 on_progress: Callable[[float], None] | None = None):
        init_llama()
        self.max_sequences = config.parallel
        self.max_batch_tokens = config.n_batch
        progress = on_progress or terminal_progress(name)

        @ll.llama_progress_callback
        def _progress(fraction: float, _user: ctypes.c_void_p) -> bool:
            progress(fraction)
            return True

        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # AMX "extra buffer types" crash in the first multi-row matmul on these CPUs (GCC 12's
        # _tile_loadconfig miscompile); the plain CPU kernels are safe everywhere.
        mparams.use_extra_bufts = False
        mparams.progress_callback = _progress
        self._model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {path} (is it a GGUF model file?)")
        self.vocab = LlamaVocab(self._model)
        n_ctx_train = ll.llama_model_n_ctx_train(self._model)
        n_ctx = min(config.n_ctx, n_ctx_train) if n_ctx_train > 0 else config.n_ctx  # per sequence
        self.kv_capacity = n_ctx * config.parallel
        # one more sequence than the engine's, never decoded: where swap() parks a cache
        self._scratch = config.parallel
        threads = config.n_threads or default_threads()

        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx * (config.parallel + 1)
        cparams.n_batch = config.n_batch
        cparams.n_ubatch = config.n_batch
        cparams.n_seq_max = config.parallel + 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # Flash attention is faster here (decode 12-25%, prefill 7-15%), but stock ggml sums a lone
        # token's keys split over threads (from 512 cells) and 64 query rows or more in tiles,
        # each in another order than one row: output would depend on the load. Rill's build sums
        # every row alone, in key order (scripts/install-llama-cpp.sh); any other build runs
        # without flash attention.
        cparams.flash_attn_type = (ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if row_order_flash_attention()
                                   else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        # Each sequence gets its own n_ctx cells. With one shared pool, a sequence's attention
        # spans the other sequences' (masked) cells too, so its numbers, and greedy text, change
        # with whatever else runs; split caches give the same output alone and in a batch.
        cparams.kv_unified = False
        cparams.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise BackendError("llama.cpp could not create a context (out of memory?)")
        self._memory = ll.llama_get_memory(self._ctx)
        self.n_vocab = self.vocab.n_vocab
        self._alloc_batch(config.n_batch)
        self._batch_invariant = not llamafile_enabled()
        if not self._batch_invariant:
            log.warning("llama.cpp was built with llamafile's kernels: a token's logits depend on how "
                        "it is batched, so `prediction` may change output at near-ties (reinstall "
                        "llama-cpp-python with scripts/install-llama-cpp.sh; docs/prediction.md)")

        self.info = ModelInfo(
            name=name,
            n_ctx=n_ctx,
            n_vocab=self.n_vocab,
            chat_template=self.vocab.chat_template,
            bos_token=self.vocab.bos_token,
            eos_token=self.vocab.eos_token,
            add_bos=self.vocab.add_bos,
            fingerprint=self._fingerprint(path),
        )
        log.info("loaded %s: %d tokens per sequence, %d-token KV cache for %d sequences, %d threads",
                 path.name, n_ctx, self.kv_capacity, config.parallel, threads)

    @staticmethod
    def _fingerprint(path: Path) -> str:
        ident = f"{path.name}:{path.stat().st_size}:rill-{__version__}:llama-cpp-python-{ll.__version__}"
        return "fp_" + hashlib.sha256(ident.encode()).hexdigest()[:10]

    def _alloc_batch(self, capacity: int) -> None:
        """A llama_batch over numpy arrays; seq_id[i] points at element i of one int32 array."""
        self._tok = np.zeros(capacity, np.int32)
        self._pos = np.zeros(capacity, np.int32)
        self._nseq = np.ones(capacity, np.int32)
        self._seq = np.zeros(capacity, np.int32)
        self._want = np.zeros(capacity, np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self._seq.ctypes.data
        self._seq_ptrs = (i32p * capacity)(*[ctypes.cast(base + 4 * i, i32p) for i in range(capacity)])
        batch = ll.llama_batch()
        batch.token = self._tok.ctypes.data_as(i32p)
        batch.embd = ctypes.POINTER(ctypes.c_float)()
        batch.pos = self._pos.ctypes.data_as(i32p)
        batch.n_seq_id = self._nseq.ctypes.data_as(i32p)
        batch.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(i32p))
        batch.logits = self._want.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self._batch = batch

    # ---- the Backend protocol ----------------------------------------------------------------

    def forward(self, batch: Sequence[BatchItem]) -> np.ndarray:
        """One llama_decode for all one-token items, one for all verifications, one for all
        prefill chunks (one per chunk on a build that is not batch-invariant).

        llama.cpp splits a batch over split caches into passes ("ubatches") of consecutive
        seq_ids taking the same number of tokens from each, and each pass reads every weight.
        Mixed in one call, a prefill chunk would give its first token to the decode pass, and
        with llamafile's kernels (see batch_invariant) attention for a lone token is summed in
        another order than for several: output would depend on the batch. Apart, every prefill
        token is computed the same way whatever else runs. Items are sorted by seq_id, so
        consecutive sequences share one pass (decode: 2x faster at 16 than in arrival order;
        16 cached prompts whose last two tokens are computed: one pass instead of 16).
        """
        def by_seq(indices: list[int]) -> list[int]:
            return sorted(indices, key=lambda i: batch[i].seq_id)

        singles = by_seq([i for i, item in enumerate(batch) if len(item.tokens) == 1])
        verifies = by_seq([i for i, item in enumerate(batch) if len(item.tokens) > 1 and item.num_logits > 1])
        chunks = by_seq([i for i, item in enumerate(batch) if len(item.tokens) > 1 and item.num_logits <= 1])
        # on a batch-invariant build chunks of equal length on consecutive seq_ids share passes
        chunk_groups = [chunks] if self._batch_invariant else [[i] for i in chunks]
        groups = [g for g in (singles, verifies, *chunk_groups) if g]
        rows: dict[int, np.ndarray] = {}
        done: list[BatchItem] = []
        try:
            for group in groups:
                items = [batch[i] for i in group]
                logits = self._decode(items)
                done.extend(items)
                at = 0
                for i in group:
                    k = min(batch[i].num_logits, len(batch[i].tokens))
                    if k:
                        rows[i] = logits[at : at + k]
                        at += k
        except KVCacheFull:
            for item in done:  # undo the calls that went through: the step is retried whole
                self.truncate(item.seq_id, item.start)
            raise
        if not rows:
            return np.empty((0, self.n_vocab), np.float32)
        return np.concatenate([rows[i] for i in sorted(rows)])

    def _decode(self, items: list[BatchItem]) -> np.ndarray:
        """One llama_decode over items; their logits rows (copied), in items order."""
        n = 0
        for item in items:
            k = len(item.tokens)
            if n + k > self._tok.size:
                raise BackendError(f"batch of {n + k} tokens exceeds the {self._tok.size}-token buffer")
            self._tok[n : n + k] = item.tokens
            self._pos[n : n + k] = np.arange(item.start, item.start + k, dtype=np.int32)
            self._seq[n : n + k] = item.seq_id
            self._want[n : n + k] = 0
            self._want[n + k - min(item.num_logits, k) : n + k] = 1
            n += k
        self._batch.n_tokens = n
        ret = ll.llama_decode(self._ctx, self._batch)
        if ret == 1:
            raise KVCacheFull("no room left in the KV cache")
        if ret != 0:
            raise BackendError(f"llama_decode returned {ret}")
        n_out = int(self._want[:n].sum())
        if n_out == 0:
            return np.empty((0, self.n_vocab), np.float32)
        ptr = ll.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab)).copy()

    def copy(self, src: int, dst: int) -> None:
        ll.llama_memory_seq_rm(self._memory, dst, -1, -1)
        ll.llama_memory_seq_cp(self._memory, src, dst, -1, -1)  # cells are shared, not duplicated

    def swap(self, a: int, b: int) -> None:
        """Three whole-cache copies through the scratch sequence (each moves n_ctx cells, ~6 ms
        for SmolLM2's 4,096: cheaper than a few decode steps split in one more pass)."""
        self.copy(a, self._scratch)
        self.copy(b, a)
        self.copy(self._scratch, b)
        self.release(self._scratch)

    def mapped_prefix(self, seq_id: int, tokens: Sequence[int], start: int) -> int:
        return 0

    def truncate(self, seq_id: int, keep: int) -> bool:
        return bool(ll.llama_memory_seq_rm(self._memory, seq_id, keep, -1))

    def release(self, seq_id: int) -> None:
        ll.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    @property
    def batch_invariant(self) -> bool:
        return self._batch_invariant

    def close(self) -> None:
        if self._ctx:
            ll.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None
