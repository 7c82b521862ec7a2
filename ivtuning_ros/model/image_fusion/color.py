"""From the perception engine's normalised inputs to fusion's [0, 1] luminance, and the
visible colour back onto a fused luminance (YCbCr, BT.601)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..config import InputConfig


def unnormalise(rgb: Tensor, ir: Tensor, config: InputConfig) -> tuple[Tensor, Tensor]:
    """Normalised RGB (B, 3, H, W) and IR (B, C, H, W) -> both in [0, 1] (IR's first
    channel), undoing the engine's mean/std normalisation."""
    mean = torch.tensor(config.rgb_mean, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(config.rgb_std, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return ((rgb * std + mean).clamp(0, 1),
            (ir[:, :1] * config.ir_std + config.ir_mean).clamp(0, 1))


def luminance(rgb: Tensor) -> Tensor:
    """Y = 0.299 R + 0.587 G + 0.114 B: (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = rgb.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b)[:, None]


def restore_color(fused: Tensor, rgb: Tensor) -> Tensor:
    """The fused luminance (B, 1, H, W) with the visible image's chroma: (B, 3, H, W)."""
    y = luminance(rgb)
    r, _, b = rgb.unbind(1)
    cb, cr = (b[:, None] - y) * 0.564, (r[:, None] - y) * 0.713
    out = torch.cat([fused + 1.403 * cr, fused - 0.344 * cb - 0.714 * cr, fused + 1.773 * cb], 1)
    return out.clamp(0, 1)
