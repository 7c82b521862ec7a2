"""Sine position encodings of DETR-family detectors.

Every function builds its encoding from static sizes or device tensors, in the
dtype and on the device it is given, so it traces into CUDA graphs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS, _SCALE = 1e-6, 2 * math.pi  # mmdet's SinePositionalEncoding(normalize=True)


def _sine(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """(..., ) coordinates already scaled to [0, 2pi] -> (..., num_feats), sin/cos interleaved."""
    dim_t = torch.arange(num_feats, dtype=coords.dtype, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    angles = coords[..., None] / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def _normalised(counts: Tensor, extent: Tensor) -> Tensor:
    """Pixel counts from 1 over their extent (+eps), scaled to [0, 2pi], as mmdet divides."""
    return counts / (extent + _EPS) * _SCALE


def sine_position_map(height: int, width: int, num_feats: int = 128, temperature: float = 20.0,
                      dtype: torch.dtype = torch.float32,
                      device: torch.device | None = None) -> Tensor:
    """Normalised sine encoding of an unpadded (height, width) map.

    Row and column indices 1..H, 1..W are divided by the last one (+1e-6) and
    scaled by 2pi, as mmdet's SinePositionalEncoding(normalize=True, offset=0).
    The same numbers as `masked_sine_position_map` of an all-image mask, from
    one row and one column.

    Returns:
        (height * width, 2 * num_feats), channels ordered (y, x), rows row-major.
    """
    y = torch.arange(1, height + 1, dtype=dtype, device=device)
    x = torch.arange(1, width + 1, dtype=dtype, device=device)
    pos_y = _sine(_normalised(y, y[-1:]), num_feats, temperature)
    pos_x = _sine(_normalised(x, x[-1:]), num_feats, temperature)
    pos_y = pos_y[:, None, :].expand(height, width, num_feats)
    pos_x = pos_x[None, :, :].expand(height, width, num_feats)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, 2 * num_feats)


def masked_sine_position_map(mask: Tensor, num_feats: int = 128, temperature: float = 20.0,
                             dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised sine encoding of padded maps, as mmdet's SinePositionalEncoding(mask).

    A pixel's row (column) is the count of image pixels up to it in its column
    (row), divided by that column's (row's) count (+1e-6) and scaled by 2pi: the
    image spans [0, 2pi] whatever the padding.

    Args:
        mask: (B, H, W) bool, True = padding.
    Returns:
        (B, H * W, 2 * num_feats) of ``dtype``, channels ordered (y, x), rows row-major.
    """
    image = (~mask).to(dtype)
    y = image.cumsum(1)
    x = image.cumsum(2)
    pos_y = _sine(_normalised(y, y[:, -1:, :]), num_feats, temperature)
    pos_x = _sine(_normalised(x, x[:, :, -1:]), num_feats, temperature)
    return torch.cat([pos_y, pos_x], dim=-1).flatten(1, 2)


def coordinate_to_encoding(coords: Tensor, num_feats: int = 128,
                           temperature: float = 10000.0) -> Tensor:
    """Sine encoding of normalised points or boxes.

    Computed in float32 at least (float64 input stays float64): half-precision
    angles would blur neighbouring positions.

    Args:
        coords: (..., 2) as (x, y) or (..., 4) as (cx, cy, w, h), in [0, 1].
    Returns:
        (..., 2 * num_feats) ordered (y, x), or (..., 4 * num_feats) ordered (y, x, w, h).
    """
    scaled = coords.to(torch.promote_types(coords.dtype, torch.float32)) * (2 * math.pi)
    parts = [_sine(scaled[..., i], num_feats, temperature) for i in range(coords.shape[-1])]
    order = [1, 0] if coords.shape[-1] == 2 else [1, 0, 2, 3]
    return torch.cat([parts[i] for i in order], dim=-1)
