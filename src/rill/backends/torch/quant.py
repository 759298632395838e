"""Weight-only int8 and int4 linears (`--weights int8|int4`): the weights quantized once at load,
multiplied by quant_matmul.cpp's kernels.

int8: one scale per output channel (absmax / 127), the activations rounded to bf16 (so that many
rows run through AVX512-BF16's dot product). int4: a scale and a minimum per 32 weights of a
channel, w = scale * q + min with q in 0..15, as llama.cpp's Q4_1 (so a Q4_1 file's weights come
back as they were, up to float rounding), float32 activations. The kernel sums each output in one
fixed order (float32 chains over k, group by group, or the dot product's pairs, the same bits),
so a row's result never depends on the other rows of the step (quant_matmul.cpp says exactly how).
"""

from __future__ import annotations

import torch

from rill.backends.base import BackendError

TILE = 32  # output columns per tile (quant_matmul.cpp's kTile)
INT4_GROUP = 32
WEIGHT_FORMATS = ("int8", "int4")


class QuantLinear:
    """y = x W'^T (+ b), W' the quantized weight; called as layers.Linear is."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int):
        if weight.device.type != "cpu":
            raise BackendError("int8 and int4 weights are CPU kernels")
        self.bits, self.bias = bits, None if bias is None else bias.float()
        self.out_features, k = weight.shape
        self.group = k if bits == 8 else INT4_GROUP
        if k % self.group:
            raise BackendError(f"--weights int4 needs rows of a multiple of {INT4_GROUP} values, this one has {k}")
        self.packed, self.scales, self.mins = quantize(weight, bits, self.group)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.rill_kernels.quant_linear(x, self.packed, self.scales, self.mins, self.bias,
                                                   self.out_features, self.group, self.bits)

    def dequantized(self) -> torch.Tensor:
        """The weights the kernel multiplies by, [out, K] float32 (for tests)."""
        tiles, k = self.packed.shape[:2]
        scales = self.scales.repeat_interleave(self.group, dim=1)  # [T, K, 32]
        if self.bits == 8:
            w = self.packed.view(torch.int8).float() * scales  # [T, K, 32]
        else:
            q = torch.cat([self.packed & 0x0F, self.packed >> 4], dim=-1).float()
            w = q * scales + self.mins.repeat_interleave(self.group, dim=1)
        w = w.permute(0, 2, 1).reshape(tiles * TILE, k)
        return w[: self.out_features]

    @property
    def nbytes(self) -> int:
        return self.packed.numel() + (self.scales.numel() + (0 if self.mins is None else self.mins.numel())) * 4


def quantize(weight: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """weight [N, K] -> (packed uint8 [tiles, K, 32 or 16], scales and int4's mins float32
    [tiles, K / group, 32]); the columns padded to whole tiles with zeros."""
    n, k = weight.shape
    tiles = -(-n // TILE)
    w = torch.zeros(tiles * TILE, k, dtype=torch.float32)
    w[:n] = weight.float()
    grouped = w.view(tiles * TILE, k // group, group)
    mins = None
    if bits == 8:
        scales = grouped.abs().amax(-1) / 127
        scales[scales == 0] = 1.0
        q = torch.round(grouped / scales.unsqueeze(-1)).clamp_(-127, 127)
    else:
        mins = grouped.amin(-1)
        scales = (grouped.amax(-1) - mins) / 15
        scales[scales == 0] = 1.0
        q = torch.round((grouped - mins.unsqueeze(-1)) / scales.unsqueeze(-1)).clamp_(0, 15)
    q = q.view(tiles, TILE, k).permute(0, 2, 1).contiguous()  # [T, K, 32]: k-major in a tile
    if bits == 8:
        packed = q.to(torch.int8).view(torch.uint8)
    else:
        u = q.to(torch.uint8)
        packed = u[..., :16] | (u[..., 16:] << 4)  # byte j: column j low, column j + 16 high

    def by_tile(t: torch.Tensor) -> torch.Tensor:  # [N, K / group] -> [tiles, K / group, 32]
        return t.view(tiles, TILE, k // group).permute(0, 2, 1).contiguous()

    return packed.contiguous(), by_tile(scales), None if mins is None else by_tile(mins)
