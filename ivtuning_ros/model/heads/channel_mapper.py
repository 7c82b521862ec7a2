"""Channel mapper neck: backbone stages -> a pyramid of hidden-width maps (DINO's neck)."""
from __future__ import annotations

from torch import Tensor, nn


class ConvGN(nn.Module):
    """Conv (no bias: GroupNorm follows) + GroupNorm(32), no activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=False)
        self.gn = nn.GroupNorm(32, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.gn(self.conv(x))


class ChannelMapper(nn.Module):
    """1x1 conv + GN per input map, plus ``extra_levels`` 3x3 stride-2 conv + GN levels.

    The first extra level reads the last input map, later ones the previous extra level.
    """

    def __init__(self, in_channels: list[int], out_channels: int, extra_levels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvGN(c, out_channels, 1) for c in in_channels)
        self.extra_convs = nn.ModuleList(
            ConvGN(in_channels[-1] if i == 0 else out_channels, out_channels, 3, stride=2)
            for i in range(extra_levels)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Maps (B, C_i, H_i, W_i) -> list of (B, out_channels, H_l, W_l), finest first."""
        outs = [conv(x) for conv, x in zip(self.convs, features, strict=True)]
        for index, conv in enumerate(self.extra_convs):
            outs.append(conv(features[-1] if index == 0 else outs[-1]))
        return outs
