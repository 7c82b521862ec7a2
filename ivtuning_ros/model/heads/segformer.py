"""SegFormer-style all-MLP segmentation decoder on the four backbone stages.

Each stage is projected to ``embed_dim`` by a 1x1 conv (``linear_c``), upsampled
to the stage-0 (1/4 resolution) map, concatenated in stage order, fused by
1x1 conv + BatchNorm + ReLU (``linear_fuse``), dropped out and classified by a
1x1 conv (``linear_pred``); the logits are upsampled to the requested size.
All resizing is bilinear with align_corners=False.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SegFormerHead(nn.Module):
    """All-MLP decoder: stage maps (B, C_s, H_s, W_s) -> logits (B, num_classes, H, W)."""

    def __init__(self, in_channels: list[int], *, num_classes: int, embed_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        self.linear_fuse = nn.Sequential(
            # No conv bias: the BatchNorm shift replaces it.
            nn.Conv2d(len(in_channels) * embed_dim, embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: list[Tensor], output_size: tuple[int, int]) -> Tensor:
        """Logits (B, num_classes, *output_size) from one map per stage, stage 0 the largest."""
        size = features[0].shape[-2:]
        # Project before upsampling: the 1x1 convs then run on the small maps.
        projected = [
            _resize(proj(feature), size)
            for proj, feature in zip(self.linear_c, features, strict=True)
        ]
        fused = self.linear_fuse(torch.cat(projected, dim=1))
        return _resize(self.linear_pred(self.dropout(fused)), output_size)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) to ``size``; a no-op (no kernel) when already there."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
