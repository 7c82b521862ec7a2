"""DINO detection and segmentation post-processing back to original image pixels.

The network sees a letterboxed image: the original (orig_h, orig_w) resized
with its aspect ratio kept into the top left of the network input (in_h, in_w),
padded right and bottom, as mmdet pads a batch (the detection head masks that
padding). `Letterbox` records that mapping; one Letterbox applies to a whole
batch, so a batch holds images of one original size (one camera stream).

The functions marked graph-safe run with fixed shapes, without host
synchronisation and without data-dependent Python control flow, so they can
be captured in a CUDA graph. `postprocess` composes them and does the final
boolean indexing (dynamic shapes) outside the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_ops import box_cxcywh_to_xyxy


@dataclass(frozen=True)
class Letterbox:
    """Keep-ratio resize by ``scale`` into the top left of the network input.

    Box methods take xyxy boxes (..., 4) in pixels: x_orig = x_in / scale.
    """

    scale: float
    orig_h: int
    orig_w: int
    in_h: int
    in_w: int

    def to_original(self, boxes: Tensor) -> Tensor:
        """Network-input pixels -> original pixels, not clipped."""
        return boxes / self.scale

    def to_input(self, boxes: Tensor) -> Tensor:
        """Original pixels -> network-input pixels (the inverse of `to_original`)."""
        return boxes * self.scale

    def clip(self, boxes: Tensor) -> Tensor:
        """Clip original-pixel boxes to [0, orig_w] x [0, orig_h]."""
        x0, y0, x1, y1 = boxes.unbind(-1)
        w, h = self.orig_w, self.orig_h
        return torch.stack([x0.clamp(0, w), y0.clamp(0, h), x1.clamp(0, w), y1.clamp(0, h)],
                           dim=-1)

    @property
    def valid_size(self) -> tuple[int, int]:
        """(height, width) of the resized image: the top-left region of the network input
        that is not padding (the model's ``valid_sizes``, mmdet's ``img_shape``)."""
        return round(self.orig_h * self.scale), round(self.orig_w * self.scale)

    @property
    def valid_slices(self) -> tuple[slice, slice]:
        """(rows, cols) of the network input that hold the resized image, not padding."""
        height, width = self.valid_size
        return slice(0, height), slice(0, width)


def letterbox_for(orig_h: int, orig_w: int, in_h: int, in_w: int) -> Letterbox:
    """The letterbox that fits (orig_h, orig_w) into (in_h, in_w) keeping the aspect ratio.

    The resized image is round(orig * scale) pixels at the top left; all padding is
    right/bottom.
    """
    if min(orig_h, orig_w, in_h, in_w) <= 0:
        raise ValueError(f"sizes must be positive, got orig {orig_h}x{orig_w}, in {in_h}x{in_w}")
    return Letterbox(min(in_h / orig_h, in_w / orig_w), orig_h, orig_w, in_h, in_w)


def select_detections(pred_logits: Tensor, pred_boxes: Tensor,
                      num_select: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k (query, class) pairs over all queries and classes, without NMS (graph-safe).

    Args:
        pred_logits: (B, Q, K) raw class logits of the last decoder layer.
        pred_boxes: (B, Q, 4) cxcywh normalised to the image region of the input.
        num_select: k, capped at Q * K.
    Returns:
        scores (B, k) sigmoid scores sorted descending, labels (B, k) int64,
        boxes (B, k, 4) xyxy normalised as ``pred_boxes``.
    """
    num_classes = pred_logits.shape[-1]
    k = min(num_select, pred_logits.shape[1] * num_classes)
    scores, index = pred_logits.sigmoid().flatten(1).topk(k, dim=1)
    labels = index % num_classes
    queries = index // num_classes
    boxes = pred_boxes.gather(1, queries.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, box_cxcywh_to_xyxy(boxes)


def boxes_to_original(boxes_xyxy_norm: Tensor, letterbox: Letterbox) -> Tensor:
    """(..., 4) xyxy normalised to the image region of the input -> xyxy original pixels,
    clipped.

    The detection head normalises boxes to the image region (``valid_size``), as
    mmdet normalises to ``img_shape``. Graph-safe. The one ``letterbox`` applies to
    every image of the batch.
    """
    x0, y0, x1, y1 = boxes_xyxy_norm.unbind(-1)
    h, w = letterbox.valid_size
    pixels = torch.stack([x0 * w, y0 * h, x1 * w, y1 * h], dim=-1)
    return letterbox.clip(letterbox.to_original(pixels))


def filter_mask(scores: Tensor, labels: Tensor, score_threshold: float | Tensor,
                class_mask: Tensor | None, max_detections: int) -> Tensor:
    """Which of the top-k detections to report (graph-safe).

    Keeps score >= threshold with an allowed class, then at most the first
    ``max_detections`` kept entries of each image; ``scores`` must be sorted
    descending along the last dimension, as `select_detections` returns them.

    Args:
        scores, labels: (B, k).
        score_threshold: a float, or a 0-dim tensor on the scores' device: a
            captured graph reads the tensor, so ``fill_`` changes the threshold
            without re-capturing.
        class_mask: (K,) bool on the scores' device, True for the classes to report;
            None keeps all.
        max_detections: the most detections per image.
    Returns:
        (B, k) bool.
    """
    keep = scores >= score_threshold
    if class_mask is not None:
        keep = keep & class_mask[labels]
    # Running count of kept entries: fixed shape, unlike slicing the first n. Counted in
    # int32: ONNX's CumSum takes no booleans.
    return keep & (keep.to(torch.int32).cumsum(dim=-1) <= max_detections)


def postprocess(pred_logits: Tensor, pred_boxes: Tensor, letterbox: Letterbox,
                num_select: int = 300, score_threshold: float | Tensor = 0.0,
                class_mask: Tensor | None = None,
                max_detections: int = 100) -> list[dict[str, Tensor]]:
    """Detections per image, from DINO outputs to original image pixels.

    Arguments as in `select_detections` and `filter_mask`.

    Returns:
        One dict per image: "scores" (N,) descending, "labels" (N,) int64,
        "boxes" (N, 4) xyxy in original image pixels.
    """
    scores, labels, boxes = select_detections(pred_logits, pred_boxes, num_select)
    boxes = boxes_to_original(boxes, letterbox)
    keep = filter_mask(scores, labels, score_threshold, class_mask, max_detections)
    return [
        {"scores": s[k], "labels": lab[k], "boxes": b[k]}
        for s, lab, b, k in zip(scores, labels, boxes, keep, strict=True)
    ]


# Logits are resized bilinearly to at most this many pixels (1080p fits, unchanged); a larger
# original gets its class map from that size by nearest neighbour. At 4096^2 the full-size
# logits took K x 64 MB and about 1.8 s on a 2-core CPU, for no detail the network's
# 512x640-class output holds.
MAX_LOGIT_PIXELS = 1 << 21


def segmentation_to_original(seg_logits: Tensor, letterbox: Letterbox) -> Tensor:
    """Class map in original pixels from logits at network input resolution (graph-safe).

    The padding is cropped before resizing, so padded pixels never bleed into
    the image border. Originals over `MAX_LOGIT_PIXELS` are resized bilinearly to the
    largest size within it with their aspect ratio, then to the original by nearest
    neighbour (the branch depends only on the letterbox, a static shape).

    Args:
        seg_logits: (B, K, in_h, in_w).
        letterbox: applies to every image of the batch.
    Returns:
        (B, orig_h, orig_w) class indices: int64, or uint8 for originals over
        `MAX_LOGIT_PIXELS` (at most 256 classes then).
    """
    rows, cols = letterbox.valid_slices
    orig = (letterbox.orig_h, letterbox.orig_w)
    pixels = orig[0] * orig[1]
    if pixels <= MAX_LOGIT_PIXELS:
        logits = F.interpolate(seg_logits[..., rows, cols], size=orig, mode="bilinear",
                               align_corners=False)
        return logits.argmax(dim=1)
    shrink = (MAX_LOGIT_PIXELS / pixels) ** 0.5
    size = (max(1, int(orig[0] * shrink)), max(1, int(orig[1] * shrink)))
    logits = F.interpolate(seg_logits[..., rows, cols], size=size, mode="bilinear",
                           align_corners=False)
    classes = logits.argmax(dim=1).to(torch.uint8)
    # Nearest neighbour with pixel centres aligned (torch's "nearest-exact"), as two gathers:
    # that mode has no ONNX export, and "nearest" shifts the map by up to a source pixel.
    row_index = _nearest_source(orig[0], size[0], classes.device)
    col_index = _nearest_source(orig[1], size[1], classes.device)
    return classes.index_select(1, row_index).index_select(2, col_index)


def _nearest_source(out_size: int, in_size: int, device: torch.device) -> Tensor:
    """(out_size,) int64: the source index whose pixel centre is nearest each output's."""
    centres = torch.arange(out_size, device=device, dtype=torch.float32) + 0.5
    return (centres * (in_size / out_size)).floor().clamp(max=in_size - 1).long()


def saliency_to_original(sod_logits: Tensor, letterbox: Letterbox) -> Tensor:
    """Saliency in original pixels, uint8 0..255 (sigmoid x 255, rounded), from logits
    (B, 1, in_h, in_w) at network input resolution (graph-safe): the padding is cropped,
    then bilinear resizing of the logits, as `segmentation_to_original` (originals over
    `MAX_LOGIT_PIXELS` are resized within it, then to the original by nearest neighbour).
    Returns (B, orig_h, orig_w) uint8."""
    rows, cols = letterbox.valid_slices
    orig = (letterbox.orig_h, letterbox.orig_w)
    pixels = orig[0] * orig[1]
    size = orig
    if pixels > MAX_LOGIT_PIXELS:
        shrink = (MAX_LOGIT_PIXELS / pixels) ** 0.5
        size = (max(1, int(orig[0] * shrink)), max(1, int(orig[1] * shrink)))
    logits = F.interpolate(sod_logits[..., rows, cols], size=size, mode="bilinear",
                           align_corners=False)
    saliency = (logits[:, 0].sigmoid() * 255).round().to(torch.uint8)
    if size == orig:
        return saliency
    row_index = _nearest_source(orig[0], size[0], saliency.device)
    col_index = _nearest_source(orig[1], size[1], saliency.device)
    return saliency.index_select(1, row_index).index_select(2, col_index)
