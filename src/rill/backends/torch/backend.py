"""Rill's own PyTorch engine backend: a Llama-family model over a paged KV cache, on the CPU
(bf16 where the CPU multiplies it natively, else fp32) or a CUDA GPU.

It speaks the same Backend protocol as the llama.cpp backend. Each forward() is one model call
for the whole step: the items' tokens are placed in the cache first (prefix blocks another
sequence already computed are mapped instead of recomputed), then every matmul runs on all the
step's tokens at once and attention on each item's own keys (see layers.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rill import __version__
from rill.backends.base import BackendError, BatchItem, KVCacheFull, ModelInfo
from rill.backends.hf_vocab import HFVocab
from rill.backends.llama_vocab import LlamaVocab, VocabMethods
from rill.backends.torch.blocks import BLOCK_SIZE
from rill.backends.torch.device import resolve_device, resolve_dtype, resolve_weights
from rill.backends.torch.graphs import ENV_SWITCH as GRAPHS_SWITCH
from rill.backends.torch.graphs import CudaReplay, DecodeGraphs, EagerReplay, row_bucket, width_bucket
from rill.backends.torch.hf_weights import HFWeights, is_hf_folder
from rill.backends.torch.kernels import load_ops
from rill.backends.torch.kv_cache import KVCache
from rill.backends.torch.layers import AttentionBatch, Span
from rill.backends.torch.model import LlamaModel
from rill.backends.torch.weights import GGUFWeights
from rill.config import ModelConfig, default_threads

log = logging.getLogger("rill.torch")


class TorchBackend(VocabMethods):
    def __init__(self, model: LlamaModel, vocab: Any, config: ModelConfig, *, name: str, fingerprint: str,
                 graphs: str | None = None):
        """A backend over a loaded model and its vocabulary (load() reads both from a file).
        graphs: "cuda" records decode steps as CUDA graphs, "eager" runs the same padded buffers
        without (tests); None: "cuda" on a GPU unless RILL_CUDA_GRAPHS=0."""
        self.model, self.vocab = model, vocab
        self.device, self.dtype = model.device, model.dtype
        if vocab.n_vocab > model.spec.vocab_size:
            raise BackendError(f"the tokenizer has {vocab.n_vocab} tokens, the model {model.spec.vocab_size}")
        n_ctx = min(config.n_ctx, model.max_positions)
        self.max_sequences = config.parallel
        self.max_batch_tokens = config.n_batch
        self.kv_capacity = n_ctx * config.parallel
        # int8/int4 weights compute in float32 but keep keys and values in bf16 (Rill's kernels read
        # either): half the memory, 1.4 GB for SmolLM2's default 16 x 4096 tokens as llama.cpp's f16
        self.cache_dtype = torch.bfloat16 if model.weights != "float" and model.ops.native else self.dtype
        with torch.inference_mode():
            self.cache = KVCache(model.spec, -(-self.kv_capacity // BLOCK_SIZE), BLOCK_SIZE, self.cache_dtype,
                                 self.device)
        self.n_vocab = vocab.n_vocab
        if graphs is None and self.device.type == "cuda" and os.environ.get(GRAPHS_SWITCH, "1") != "0":
            graphs = "cuda"
        # quantized weights run Rill's own matmuls, every output one chain in k order whatever the
        # rows (quant_matmul.cpp); with every row's attention run alone over the cache (the decode
        # kernel, prompt rows too), a token's logits never depend on the rest of the step
        self.invariant = model.weights != "float" and model.ops.native
        self.graphs = DecodeGraphs(self._run, CudaReplay if graphs == "cuda" else EagerReplay) if graphs else None
        self.info = ModelInfo(
            name=name, n_ctx=n_ctx, n_vocab=self.n_vocab, chat_template=vocab.chat_template,
            bos_token=vocab.bos_token, eos_token=vocab.eos_token, add_bos=vocab.add_bos, fingerprint=fingerprint,
        )

    @classmethod
    def load(cls, path: Path, config: ModelConfig, *, name: str, device: str = "cpu", dtype: str = "auto",
             weights: str = "auto", on_progress: Callable[[float], None] | None = None) -> TorchBackend:
        """A GGUF model file (weights dequantized to dtype on device; tokenizer and chat template
        from its metadata, read by llama.cpp so that both backends tokenize alike) or a Hugging
        Face model folder (safetensors weights, tokenizer.json, the template from
        tokenizer_config.json)."""
        where = resolve_device(device)
        weights = resolve_weights(weights, where, dtype, native=load_ops(where).native)
        kind = resolve_dtype(dtype, where, weights)
        threads = config.n_threads or default_threads()
        if where.type == "cpu":
            torch.set_num_threads(threads)
        folder = is_hf_folder(path)
        source = HFWeights(path) if folder else GGUFWeights(path)
        spec = source.spec
        total = 2 + spec.num_layers * 7  # about how many tensors the loader yields
        progress = on_progress or (lambda _fraction: None)

        def reporting(tensors):
            for i, item in enumerate(tensors):
                progress(min(1.0, i / total))
                yield item
            progress(1.0)

        with torch.inference_mode():
            model = LlamaModel(spec, reporting(source.tensors()), dtype=kind, device=where,
                               max_positions=min(config.n_ctx, spec.context_length),
                               weights=weights)
        vocab = HFVocab(path) if folder else LlamaVocab.load(path)
        release_freed_heap()
        size = sum(f.stat().st_size for f in path.glob("*.safetensors")) if folder else path.stat().st_size
        ident = f"{path.name}:{size}:rill-{__version__}:torch-{torch.__version__}:{kind}:{model.weights}:{where.type}"
        backend = cls(model, vocab, config, name=name, fingerprint="fp_" + hashlib.sha256(ident.encode()).hexdigest()[:10])
        log.info("loaded %s: %s %s (%s weights) on %s, %d tokens per sequence, %d-token paged KV cache (%s, %d MiB) "
                 "for %d sequences, %d threads", path.name, spec.arch, str(kind).removeprefix("torch."), model.weights,
                 where, backend.info.n_ctx, backend.kv_capacity, str(backend.cache_dtype).removeprefix("torch."),
                 backend.kv_capacity * backend.cache.bytes_per_token >> 20, config.parallel, threads)
        return backend

    # ---- the Backend protocol ----------------------------------------------------------------

    def forward(self, batch: Sequence[BatchItem]) -> np.ndarray:
        blocks = self.cache.blocks
        aligned = [self._aligned(item) for item in batch]
        # counted before anything changes: append() must not run out of blocks midway
        needed = sum(blocks.blocks_needed(item.seq_id, start, len(ids))
                     for item, (ids, start, _) in zip(batch, aligned))
        if needed > blocks.num_available:
            raise KVCacheFull(f"{needed} KV blocks needed, {blocks.num_available} free")
        for item in batch:
            if item.start + len(item.tokens) > self.info.n_ctx:
                raise BackendError(f"sequence {item.seq_id} would exceed {self.info.n_ctx} positions")
        try:
            with torch.inference_mode():
                if self.graphs is not None and all(len(item.tokens) == 1 for item in batch):
                    bucket = self._bucket(batch)
                    step = self._place(batch, aligned, pad=bucket)
                    self.cache.prepare()
                    logits = self.graphs(bucket, step)[: len(batch)]
                else:
                    step = self._place(batch, aligned)
                    self.cache.prepare()
                    logits = self._run(step)
                # an embedding padded past the tokenizer (Qwen's) has rows no token names
                out = logits[:, : self.n_vocab].cpu().numpy()
        except Exception as exc:
            for item in batch:  # what this step appended holds nothing usable
                blocks.truncate(item.seq_id, item.start)
            if isinstance(exc, (BackendError, KVCacheFull)):
                raise
            raise BackendError(f"torch forward failed: {exc}") from exc
        for item in batch:
            blocks.computed(item.seq_id)
        return out

    def mapped_prefix(self, seq_id: int, tokens: Sequence[int], start: int) -> int:
        ids, begin, reusable = self._aligned(BatchItem(seq_id, tokens, start))
        return max(0, self.cache.blocks.mappable(seq_id, ids, begin, reusable) - (start - begin))

    def _aligned(self, item: BatchItem) -> tuple[np.ndarray, int, int]:
        """The item's tokens, where they start, and how many leading ones may be mapped from
        cached blocks (whole blocks only, never the rows whose logits are wanted). A prompt the
        engine resumes inside a block (it kept another prompt's beginning) starts again at the
        block's first position, so that this prompt's cached whole blocks can be mapped; its
        first few tokens are recomputed if none is."""
        ids, start = np.asarray(item.tokens, np.int32), item.start
        reusable = len(ids) - max(item.num_logits, 1) if len(ids) > 1 else 0
        back = start % self.cache.block_size
        if reusable >= self.cache.block_size and back:
            held = self.cache.blocks.seqs[item.seq_id].tokens[start - back : start]
            return np.concatenate([np.asarray(held, np.int32), ids]), start - back, reusable + back
        return ids, start, reusable

    def _run(self, step: _Step) -> torch.Tensor:
        return self.model.forward(step.tokens, step.positions, step.attention, self.cache, step.logit_rows)

    def _bucket(self, batch: Sequence[BatchItem]) -> tuple[int, int]:
        """The graph size a decode-only step pads to: rows, and blocks in each table (those the
        longest sequence will hold once its token is in, up to the context's)."""
        size = self.cache.block_size
        width = max(-(-(item.start + 1) // size) for item in batch)
        return row_bucket(len(batch)), min(width_bucket(width), -(-self.info.n_ctx // size))

    def _place(self, batch: Sequence[BatchItem], aligned: list[tuple[np.ndarray, int, int]],
               pad: tuple[int, int] | None = None) -> _Step:
        """Give every item's tokens (as _aligned gives them) their cache slots and lay the step
        out: one-token items' rows first, then each multi-token item's; logits rows in batch order. A decode-only step
        may be padded to `pad` = (rows, block-table width), as a CUDA graph of that size wants:
        the extra rows decode token 0 into the cache's scratch block, and their logits follow
        the real ones."""
        cache, blocks = self.cache, self.cache.blocks
        singles = [i for i, item in enumerate(batch) if len(item.tokens) == 1]
        multis = [i for i, item in enumerate(batch) if len(item.tokens) > 1]
        tokens, positions, slots = [], [], []
        first_row: dict[int, int] = {}
        num_rows: dict[int, int] = {}
        spans = []
        tables: list[list[int]] = []  # the block table and number of keys of each decode-attention row
        lengths: list[int] = []
        row = 0
        for i in singles + multis:
            item = batch[i]
            ids, start, reusable = aligned[i]
            placed = blocks.append(item.seq_id, ids, start, reusable=reusable)
            n = len(ids) - placed.num_reused
            tokens.append(ids[placed.num_reused :])
            positions.append(np.arange(start + placed.num_reused, start + len(ids), dtype=np.int64))
            slots.append(placed.slots)
            first_row[i], num_rows[i] = row, n
            table = blocks.block_table(item.seq_id)
            if len(ids) == 1 or self.invariant:  # each row over the cache, up to its own position
                tables += [table] * n
                lengths += (positions[-1] + 1).tolist()
            else:
                num_keys = blocks.length(item.seq_id)
                rows = cache.block_rows(np.asarray(table, np.int64))
                spans.append(Span(row, row + n, self._tensor(rows), num_keys,
                                  None if n == num_keys else self._offset_causal(n, num_keys)))
            row += n
        logit_rows = []
        for i, item in enumerate(batch):
            k = min(item.num_logits, num_rows[i])
            logit_rows.extend(range(first_row[i] + num_rows[i] - k, first_row[i] + num_rows[i]))
        rows_wanted, width = pad or (len(tables), max((len(t) for t in tables), default=0))
        extra = rows_wanted - len(tables)
        if extra:  # padding rows: token 0 at position 0, written to and read from the scratch block
            tokens.append(np.zeros(extra, np.int32))
            positions.append(np.zeros(extra, np.int64))
            slots.append(np.full(extra, cache.scratch_block * cache.block_size, np.int64))
            tables += [[cache.scratch_block]] * extra
            lengths += [1] * extra
            logit_rows.extend(range(len(tables) - extra, rows_wanted))
        return self._step(np.concatenate(tokens).astype(np.int64), np.concatenate(positions), np.concatenate(slots),
                          tables, np.asarray(lengths, np.int64), width, tuple(spans), np.asarray(logit_rows, np.int64))

    def _step(self, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray, tables: list[list[int]],
              lengths: np.ndarray, width: int, spans: tuple[Span, ...], logit_rows: np.ndarray) -> _Step:
        """The step's tensors: the native kernels take slots, block tables and lengths; the
        PyTorch ops the cache rows and masks made from them."""
        cache, native = self.cache, self.model.ops.native
        decode = dict(decode_tables=None, decode_lengths=None, decode_rows=None, decode_bias=None)
        if tables:
            # each table padded to the width with block 0, never read past the sequence's length
            table = np.zeros((len(tables), width), np.int64)
            for j, t in enumerate(tables):
                table[j, : len(t)] = t
            if native:
                decode.update(decode_tables=self._tensor(table), decode_lengths=self._tensor(lengths))
            else:
                bias = np.where(np.arange(width * cache.block_size) < lengths[:, None], 0.0, -np.inf)
                decode.update(decode_rows=self._tensor(cache.block_rows(table)),
                              decode_bias=self._tensor(bias.astype(np.float32).reshape(len(tables), 1, 1, -1)))
        return _Step(
            tokens=self._tensor(tokens),
            positions=self._tensor(positions),
            attention=AttentionBatch(slots=self._tensor(slots) if native else None,
                                     key_index=None if native else self._tensor(cache.key_index(slots)),
                                     value_rows=None if native else self._tensor(cache.value_rows(slots)),
                                     num_decode=len(tables), spans=spans, **decode),
            logit_rows=self._tensor(logit_rows),
        )

    def _offset_causal(self, num_queries: int, num_keys: int) -> torch.Tensor:
        """Query i (the sequence's position num_keys - num_queries + i) sees keys 0..that
        position: 0 there, -inf past it, added to the scores (SDPA's CPU kernel takes an
        additive mask in the activations' dtype at the speed of is_causal, a boolean one at
        half of it)."""
        q = torch.arange(num_keys - num_queries, num_keys, device=self.device)[:, None]
        hidden = torch.arange(num_keys, device=self.device)[None, :] > q
        return torch.zeros(hidden.shape, dtype=self.dtype, device=self.device).masked_fill_(hidden, float("-inf"))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def copy(self, src: int, dst: int) -> None:
        self.cache.blocks.copy(src, dst)  # shares the blocks: copy-on-write when either writes

    def swap(self, a: int, b: int) -> None:
        self.cache.blocks.swap(a, b)

    def truncate(self, seq_id: int, keep: int) -> bool:
        self.cache.blocks.truncate(seq_id, keep)
        return True

    def release(self, seq_id: int) -> None:
        self.cache.blocks.release(seq_id)

    @property
    def batch_invariant(self) -> bool:
        # with float weights, oneDNN picks its matmul blocking by the number of rows, so a token's
        # logits differ in the last bits with what else is in the step (docs/torch-backend.md)
        return self.invariant

    def close(self) -> None:
        self.vocab.close()
        self.model = None  # type: ignore[assignment]
        self.cache = None  # type: ignore[assignment]


def release_freed_heap() -> None:
    """Hand the heap that loading freed back to the OS: dequantizing a file to float and
    requantizing it leaves ~150 MB of freed float tensors in glibc's heap, resident until the
    process ends (malloc_trim; nothing on another libc)."""
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


@dataclass(frozen=True, slots=True)
class _Step:
    """One forward's inputs, laid out by _place."""

    tokens: torch.Tensor
    positions: torch.Tensor
    attention: AttentionBatch
    logit_rows: torch.Tensor
