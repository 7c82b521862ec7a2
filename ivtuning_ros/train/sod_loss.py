"""The salient object detection loss: binary cross-entropy + IoU (the paper's section III,
following CPNet), on each of the CPNet head's deeply supervised maps.

For logits x and a binary target g over the pixels that are not ignored (letterbox
padding), with p = sigmoid(x): BCE is the mean pixel binary cross-entropy of the batch, and
the IoU loss is, per image, 1 - (sum p*g + 1) / (sum (p + g) - sum p*g + 1), averaged over
the batch (CPNet's ``iou_loss``, whose +1 keeps an empty target finite). The hybrid loss of
one map is their sum; the head's four maps are summed (CPNet's deep supervision).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE = 255  # the target value of letterbox padding (as the segmentation mask's)


def bce_loss(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean binary cross-entropy over valid pixels; logits, target, valid (B, H, W)."""
    pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (pixel * valid).sum() / valid.sum().clamp(min=1)


def iou_loss(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """1 - soft IoU (+1 smoothed) per image over valid pixels, averaged over the batch."""
    prob = logits.sigmoid() * valid
    target = target * valid
    inter = (prob * target).sum(dim=(-2, -1))
    union = (prob + target).sum(dim=(-2, -1))
    return (1 - (inter + 1) / (union - inter + 1)).mean()


def hybrid_loss(logits: Tensor, saliency: Tensor) -> Tensor:
    """BCE + IoU of logits (B, 1, H, W) against saliency (B, H, W) int64 in {0, 1, IGNORE}."""
    logits = logits[:, 0]
    valid = (saliency != IGNORE).to(logits.dtype)
    target = (saliency == 1).to(logits.dtype)
    return bce_loss(logits, target, valid) + iou_loss(logits, target, valid)


def sod_loss(deep_logits: list[Tensor], saliency: Tensor) -> Tensor:
    """The sum of `hybrid_loss` over the head's maps (main prediction and side outputs)."""
    saliency = saliency.to(deep_logits[0].device)
    return sum(hybrid_loss(logits, saliency) for logits in deep_logits)
