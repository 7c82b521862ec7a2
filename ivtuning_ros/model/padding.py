"""Padding of the DINO encoder's token maps, for images at the top left of the network input.

mmdet (the paper's detector code) pads every image of a batch right and bottom to
the batch input size and tells the transformer which tokens are padding: a mask
at the input size, resized to every level by nearest interpolation, and each
level's valid ratio (image extent / map extent). `FeatureLevels` carries that
layout; `feature_levels` builds it from each image's valid size on the device:
`arange` comparisons and interpolation, Python-int shapes, nothing read back to
the host, so it captures into a CUDA graph.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SpatialShapes = list[tuple[int, int]]


@dataclass(frozen=True)
class FeatureLevels:
    """The token layout of the encoder memory: levels flattened row-major, concatenated.

    The padding fields are None when every token is image: ``masks`` (B, H_l, W_l)
    per level and ``mask`` (B, S) (mmdet's ``memory_mask``), True = padding;
    ``valid_counts`` (B, L, 2) the image's (columns, rows) per level, as floats;
    ``valid_ratios`` (B, L, 2) valid_counts / (W_l, H_l).
    """

    spatial_shapes: SpatialShapes
    masks: list[Tensor] | None = None
    mask: Tensor | None = None
    valid_counts: Tensor | None = None
    valid_ratios: Tensor | None = None


def feature_levels(spatial_shapes: SpatialShapes, valid_sizes: Tensor | None,
                   input_size: tuple[int, int], dtype: torch.dtype) -> FeatureLevels:
    """The layout of maps of ``spatial_shapes`` for a network input of ``input_size`` (H, W).

    Args:
        valid_sizes: (B, 2) float (height, width) in input pixels of each image, which
            sits at the top left of the input; None: every pixel is image.
        dtype: of the valid counts and ratios.
    """
    if valid_sizes is None:
        return FeatureLevels(spatial_shapes)
    if valid_sizes.dim() != 2 or valid_sizes.shape[1] != 2:
        raise ValueError("valid_sizes must be (B, 2) (height, width), got shape "
                         f"{tuple(valid_sizes.shape)}")
    masks = level_masks(valid_sizes, input_size, spatial_shapes)
    counts = valid_counts(masks).to(dtype)
    # Divided by Python ints, as mmdet's get_valid_ratio divides (same rounding on CUDA).
    ratios = torch.stack([torch.stack([counts[:, level, 0] / width, counts[:, level, 1] / height],
                                      dim=-1)
                          for level, (height, width) in enumerate(spatial_shapes)], dim=1)
    return FeatureLevels(spatial_shapes, masks, torch.cat([m.flatten(1) for m in masks], dim=1),
                         counts, ratios)


def level_masks(valid_sizes: Tensor, input_size: tuple[int, int],
                spatial_shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Per level, (B, H_l, W_l) bool, True where the token is padding.

    mmdet resizes the input-size mask with ``F.interpolate`` (nearest) and casts it
    to bool. Nearest interpolation picks source rows and columns independently,
    so resizing one padded-rows and one padded-columns vector gives the same masks
    without the input-size mask. An input pixel is image when its index is below
    the valid size.
    """
    rows = _padded(valid_sizes[:, 0], input_size[0])
    cols = _padded(valid_sizes[:, 1], input_size[1])
    masks = []
    for height, width in spatial_shapes:
        level_rows = F.interpolate(rows, size=height, mode="nearest").to(torch.bool)
        level_cols = F.interpolate(cols, size=width, mode="nearest").to(torch.bool)
        masks.append(level_rows[:, 0, :, None] | level_cols[:, 0, None, :])
    return masks


def valid_counts(masks: list[Tensor]) -> Tensor:
    """(B, L, 2) int64 image (columns, rows) per level, counted as mmdet's ``get_valid_ratio``
    does: along the first row and the first column of each mask."""
    return torch.stack([torch.stack([(~m[:, 0, :]).sum(1), (~m[:, :, 0]).sum(1)], dim=-1)
                        for m in masks], dim=1)


def _padded(valid: Tensor, size: int) -> Tensor:
    """(B,) valid extents -> (B, 1, size) float32, 1 at the padded positions."""
    positions = torch.arange(size, device=valid.device)
    return (positions >= valid[:, None]).to(torch.float32)[:, None]

