"""LoRA: a trainable low-rank update beside a frozen linear map (Hu et al.), used by CPAL
(q and k of the last stage) and DRA (every qkv of the IR stream)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LoRA(nn.Module):
    """x -> (alpha / rank) * B(A(x)): A kaiming-uniform (nn.Linear's default), B zero, so
    an untrained LoRA adds nothing. Parameters: rank * (in + out)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.zeros_(self.up.weight)
        self.scale = alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x)) * self.scale


class QKVLoRA(nn.Module):
    """One LoRA per targeted slice (q, k and/or v) of a fused qkv projection (dim -> 3 dim),
    as LoRA on separate projections; the delta is zero in the slices it does not target.
    Parameters: 2 * rank * dim per target."""

    def __init__(self, dim: int, targets: list[str], rank: int, alpha: float) -> None:
        super().__init__()
        self.slices = nn.ModuleDict({name: LoRA(dim, dim, rank, alpha) for name in targets})

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., 3 dim)."""
        zero = x.new_zeros(()).expand_as(x)
        return torch.cat([self.slices[name](x) if name in self.slices else zero
                          for name in ("q", "k", "v")], dim=-1)
