"""The simple feature pyramid of plain-ViT detectors and segmenters (ViTDet).

A plain ViT has one 1/16-resolution map per layer; the heads want four maps at
strides 4, 8, 16 and 32. From the last layer (or from four evenly spaced layers, one
per scale): two 2x2 transposed convs up to 1/4, one up to 1/8, the map itself at 1/16,
2x2 max pooling down to 1/32; then a LayerNorm per level. It trains with the heads and
is not part of the paper's #TP.
"""
from __future__ import annotations

from torch import Tensor, nn


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleFeaturePyramid(nn.Module):
    """(B, C, H/16, W/16) map(s) -> four maps at strides 4-32 with ``out_dims`` channels:
    (C/4, C/2, C, C), `BackboneConfig.stage_dims` of a ViT of width C."""

    def __init__(self, out_dims: list[int], num_inputs: int) -> None:
        super().__init__()
        if num_inputs not in (1, 4):
            raise ValueError(f"the pyramid reads 1 or 4 layers, got {num_inputs}")
        self.num_inputs = num_inputs
        quarter, half, dim, _ = out_dims
        self.scales = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(dim, half, 2, stride=2), ChannelNorm(half),
                          nn.GELU(), nn.ConvTranspose2d(half, quarter, 2, stride=2)),
            nn.ConvTranspose2d(dim, half, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
        ])
        self.norms = nn.ModuleList(ChannelNorm(c) for c in out_dims)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        if len(maps) != self.num_inputs:
            raise ValueError(f"expected {self.num_inputs} map(s), got {len(maps)}")
        sources = maps if self.num_inputs == 4 else maps * 4
        return [norm(scale(x)) for scale, norm, x in zip(self.scales, self.norms, sources,
                                                          strict=True)]
