"""CUDA graphs for decode steps: a GPU runs a small model's step as hundreds of tiny kernels, and
launching them one by one from Python costs more than running them. A decode-only step (every
sequence one token) is recorded once as a graph per size bucket and replayed after that: the
step's inputs are copied into the graph's own buffers, and one launch runs the whole model.

A graph's tensors have fixed shapes, so steps are padded up to a bucket: rows (decoding
sequences) to 1, 2, 4, 8, then multiples of 8; block tables to a power of two of blocks. The
padding rows decode token 0 into the cache's scratch block (TorchBackend._place). Steps with
prompt tokens run eagerly. RILL_CUDA_GRAPHS=0 turns graphs off.

On a CPU there is nothing to capture: `EagerReplay` runs the same buffers through the model
directly, which is how the padding and buffer handling are tested without a GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

ENV_SWITCH = "RILL_CUDA_GRAPHS"
MIN_WIDTH = 8  # blocks: 128 positions


def row_bucket(rows: int) -> int:
    """1, 2, 4, 8, then the next multiple of 8."""
    if rows <= 8:
        return 1 << max(rows - 1, 0).bit_length()
    return -(-rows // 8) * 8


def width_bucket(blocks: int) -> int:
    return max(MIN_WIDTH, 1 << max(blocks - 1, 0).bit_length())


def _copy_into(static: Any, fresh: Any) -> None:
    """Copy every tensor of fresh (a step: dataclasses of tensors) into static's, in place."""
    for field in dataclasses.fields(static):
        a, b = getattr(static, field.name), getattr(fresh, field.name)
        if isinstance(a, torch.Tensor):
            a.copy_(b)
        elif dataclasses.is_dataclass(a):
            _copy_into(a, b)


def _clone(step: Any) -> Any:
    """A step whose tensors are the graph's own buffers (copies of the first step's)."""
    changes = {}
    for field in dataclasses.fields(step):
        value = getattr(step, field.name)
        if isinstance(value, torch.Tensor):
            changes[field.name] = value.clone()
        elif dataclasses.is_dataclass(value):
            changes[field.name] = _clone(value)
    return dataclasses.replace(step, **changes)


class CudaReplay:
    """One captured graph: its input buffers and its output."""

    def __init__(self, run: Callable[[Any], torch.Tensor], step: Any, pool: Any):
        self.inputs = _clone(step)
        stream = torch.cuda.Stream()  # warm-up runs (allocations, kernel choices) off the capture
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                run(self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = run(self.inputs)

    def __call__(self, step: Any) -> torch.Tensor:
        _copy_into(self.inputs, step)
        self.graph.replay()
        return self.output


class EagerReplay:
    """The same buffers without a graph (the CPU, and tests)."""

    def __init__(self, run: Callable[[Any], torch.Tensor], step: Any, pool: Any = None):
        self.run = run
        self.inputs = _clone(step)

    def __call__(self, step: Any) -> torch.Tensor:
        _copy_into(self.inputs, step)
        return self.run(self.inputs)


class DecodeGraphs:
    """Replays per (rows, width) bucket, recorded on first use."""

    def __init__(self, run: Callable[[Any], torch.Tensor], replay: type = CudaReplay):
        self.run = run
        self.replay = replay
        self.graphs: dict[tuple[int, int], CudaReplay | EagerReplay] = {}
        self.pool = torch.cuda.graph_pool_handle() if replay is CudaReplay else None  # one memory pool for all

    def __call__(self, bucket: tuple[int, int], step: Any) -> torch.Tensor:
        graph = self.graphs.get(bucket)
        if graph is None:
            graph = self.graphs[bucket] = self.replay(self.run, step, self.pool)
        return graph(step)  # (a capture records without running: the first step replays too)
