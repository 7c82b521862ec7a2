"""Sine position encodings of DETR-family detectors.

Both functions build encodings from static sizes, so they trace into CUDA graphs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _sine(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """(..., ) coordinates already scaled to [0, 2pi] -> (..., num_feats), sin/cos interleaved."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    angles = coords[..., None] / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_map(height: int, width: int, num_feats: int = 128, temperature: float = 20.0,
                      device: torch.device | None = None) -> Tensor:
    """Normalised sine encoding of an unpadded (height, width) map.

    Row and column indices 1..H, 1..W are divided by the last one (+1e-6) and
    scaled by 2pi, as mmdet's SinePositionalEncoding(normalize=True, offset=0).

    Returns:
        (height * width, 2 * num_feats), channels ordered (y, x), rows row-major.
    """
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    pos_y = _sine(y, num_feats, temperature)[:, None, :].expand(height, width, num_feats)
    pos_x = _sine(x, num_feats, temperature)[None, :, :].expand(height, width, num_feats)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, 2 * num_feats)


def coordinate_to_encoding(coords: Tensor, num_feats: int = 128,
                           temperature: float = 10000.0) -> Tensor:
    """Sine encoding of normalised points or boxes.

    Args:
        coords: (..., 2) as (x, y) or (..., 4) as (cx, cy, w, h), in [0, 1].
    Returns:
        (..., 2 * num_feats) ordered (y, x), or (..., 4 * num_feats) ordered (y, x, w, h).
    """
    scaled = coords.float() * (2 * math.pi)
    parts = [_sine(scaled[..., i], num_feats, temperature) for i in range(coords.shape[-1])]
    order = [1, 0] if coords.shape[-1] == 2 else [1, 0, 2, 3]
    return torch.cat([parts[i] for i in order], dim=-1)
