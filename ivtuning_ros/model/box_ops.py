"""Box conversions and overlaps for the DINO head.

Formats: ``cxcywh`` is (centre x, centre y, width, height) and ``xyxy`` is
(x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, both in the last dimension and in
any consistent unit (normalised or pixels).
"""
from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x), finite at 0 and 1: both x and 1 - x are floored at ``eps``."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of xyxy boxes (N, 4) and (M, 4).

    Returns:
        (iou, union), both (N, M).
    """
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = _area_of_extent((bottom_right - top_left).clamp(min=0))
    union = _box_area(boxes1)[:, None] + _box_area(boxes2)[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU of xyxy boxes (N, 4) and (M, 4) -> (N, M), in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest box enclosing A and B.
    Degenerate boxes (x1 < x0) give meaningless values; they are not checked
    here because the check would synchronise with the device.
    """
    iou, union = box_iou(boxes1, boxes2)
    top_left = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    enclosing = _area_of_extent(bottom_right - top_left)
    return iou - (enclosing - union) / enclosing


def _box_area(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...)."""
    return _area_of_extent(boxes[..., 2:] - boxes[..., :2])


def _area_of_extent(extent: Tensor) -> Tensor:
    """(..., 2) (width, height) -> (...)."""
    return extent[..., 0] * extent[..., 1]
