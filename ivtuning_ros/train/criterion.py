"""DINO's set criterion plus the segmentation loss (REFERENCE_FACTS.md section 2).

Detection: sigmoid focal classification, L1 on normalised cxcywh and GIoU on the
Hungarian-matched pairs of the last decoder layer, every earlier layer (suffix
``_{i}``) and the encoder proposals (``_enc``); the denoising queries' losses
(``_dn`` for the last layer, ``_dn_{i}`` for earlier ones) use the pairs the DN
construction fixes. Segmentation: pixel cross-entropy. Salient objects: BCE + IoU on each
of the CPNet head's maps (`sod_loss`).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .denoising import DenoisingQueries
from .matcher import HungarianMatcher, Indices
from .sod_loss import sod_loss

# The reference DINO's loss weights; loss_seg is ours.
DEFAULT_WEIGHTS: dict[str, float] = {
    "loss_cls": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_seg": 1.0, "loss_sod": 1.0,
}
# F.cross_entropy's default: no label is ignored unless one is configured.
NO_IGNORE_INDEX = -100


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss of logits and {0, 1} targets of the same shape.

    -alpha_t (1 - p_t)^gamma log(p_t), alpha_t = alpha on positives, 1 - alpha on negatives.
    """
    prob = logits.sigmoid()
    # cross-entropy from logits: finite where the sigmoid saturates
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


class SetCriterion(nn.Module):
    """Weighted training losses of the model's outputs.

    forward returns every weighted loss by name and their sum as "loss". Targets
    are a list (one per image) of {"labels": int64 (N,), "boxes": (N, 4) cxcywh
    normalised to the network input}; ``seg_targets`` is (B, H, W) int64 at the
    size of ``seg_logits``. ``weights`` overrides entries of DEFAULT_WEIGHTS.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher,
                 weights: dict[str, float] | None = None, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, seg_ignore_index: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.seg_ignore_index = NO_IGNORE_INDEX if seg_ignore_index is None else seg_ignore_index

    def forward(self, outputs: dict, targets: list[dict],
                denoising: DenoisingQueries | None = None,
                seg_targets: Tensor | None = None,
                sod_targets: Tensor | None = None) -> dict[str, Tensor]:
        """Losses of ``outputs`` (the model's training-mode dict); ``sod_targets`` (B, H, W)
        int64 in {0, 1, 255 ignored} at the size of ``sod_logits``.

        ``denoising`` is the batch's ``DenoisingQueries`` (its ``positive_indices``
        are read); the DN losses need ``outputs["dn_outputs"]`` too.
        """
        losses: dict[str, Tensor] = {}
        if "pred_logits" in outputs:
            losses.update(self.detection_losses(outputs, targets))
            if denoising is not None and "dn_outputs" in outputs:
                losses.update(self.denoising_losses(outputs["dn_outputs"], targets, denoising))
        if seg_targets is not None and "seg_logits" in outputs:
            losses["loss_seg"] = self.weights["loss_seg"] * self.loss_seg(
                outputs["seg_logits"], seg_targets)
        if sod_targets is not None and "sod_deep_logits" in outputs:
            losses["loss_sod"] = self.weights["loss_sod"] * sod_loss(
                outputs["sod_deep_logits"], sod_targets)
        losses["loss"] = sum(losses.values())
        return losses

    def detection_losses(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Matched losses of the last layer, the aux layers and the encoder proposals."""
        device = outputs["pred_logits"].device
        num_boxes = _mean_count(sum(len(t["labels"]) for t in targets), device)
        layers = [("", outputs)]
        layers += [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        if "enc_outputs" in outputs:
            layers.append(("_enc", outputs["enc_outputs"]))
        losses = {}
        for suffix, layer in layers:
            indices = self.matcher(layer["pred_logits"], layer["pred_boxes"], targets)
            losses.update(self.layer_losses(layer, targets, indices, num_boxes, suffix))
        return losses

    def denoising_losses(self, dn_outputs: list[dict], targets: list[dict],
                         denoising: DenoisingQueries) -> dict[str, Tensor]:
        """Every decoder layer's DN losses: each positive query is paired with the
        target it copies; negatives and padding are classified as no object."""
        indices = denoising.positive_indices
        device = dn_outputs[-1]["pred_logits"].device
        num_positives = _mean_count(sum(len(query_idx) for query_idx, _ in indices), device)
        last = len(dn_outputs) - 1
        losses = {}
        for i, layer in enumerate(dn_outputs):
            suffix = "_dn" if i == last else f"_dn_{i}"
            losses.update(self.layer_losses(layer, targets, indices, num_positives, suffix))
        return losses

    def layer_losses(self, layer: dict, targets: list[dict], indices: Indices,
                     num_boxes: Tensor, suffix: str) -> dict[str, Tensor]:
        """One layer's weighted cls/bbox/giou losses, keys suffixed by ``suffix``."""
        losses = {"loss_cls": self.loss_cls(layer["pred_logits"], targets, indices, num_boxes),
                  **self.loss_boxes(layer["pred_boxes"], targets, indices, num_boxes)}
        return {name + suffix: self.weights[name] * value for name, value in losses.items()}

    def loss_cls(self, logits: Tensor, targets: list[dict], indices: Indices,
                 num_boxes: Tensor) -> Tensor:
        """Focal loss of logits (B, Q, K) against one-hot targets: the matched queries'
        classes, no object elsewhere; summed and divided by the number of boxes."""
        one_hot = torch.zeros_like(logits)
        batch_idx, query_idx = _flat_query_index(indices, logits.device)
        labels = torch.cat([t["labels"][j.to(t["labels"].device)]
                            for t, (_, j) in zip(targets, indices, strict=True)])
        one_hot[batch_idx, query_idx, labels.to(logits.device)] = 1.0
        return focal_loss(logits, one_hot, self.focal_alpha, self.focal_gamma).sum() / num_boxes

    def loss_boxes(self, boxes: Tensor, targets: list[dict], indices: Indices,
                   num_boxes: Tensor) -> dict[str, Tensor]:
        """L1 on cxcywh and 1 - GIoU on xyxy of the matched boxes (B, Q, 4), per box."""
        batch_idx, query_idx = _flat_query_index(indices, boxes.device)
        matched = boxes[batch_idx, query_idx]
        target = torch.cat([t["boxes"][j.to(t["boxes"].device)]
                            for t, (_, j) in zip(targets, indices, strict=True)])
        target = target.to(matched)
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(matched),
                                              box_cxcywh_to_xyxy(target)))
        return {"loss_bbox": F.l1_loss(matched, target, reduction="sum") / num_boxes,
                "loss_giou": (1 - giou).sum() / num_boxes}

    def loss_seg(self, seg_logits: Tensor, seg_targets: Tensor) -> Tensor:
        """Mean pixel cross-entropy of logits (B, K, H, W) and labels (B, H, W),
        skipping the ignore index; 0 when every pixel is ignored (not NaN)."""
        seg_targets = seg_targets.to(seg_logits.device)
        total = F.cross_entropy(seg_logits, seg_targets, ignore_index=self.seg_ignore_index,
                                reduction="sum")
        return total / (seg_targets != self.seg_ignore_index).sum().clamp(min=1)


def _flat_query_index(indices: Indices, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-image (query_idx, target_idx) pairs -> flat (batch_idx, query_idx) for indexing."""
    batch_idx = torch.cat([torch.full_like(query_idx, i) for i, (query_idx, _) in
                           enumerate(indices)])
    query_idx = torch.cat([query_idx for query_idx, _ in indices])
    return batch_idx.to(device), query_idx.to(device)


def _mean_count(count: int, device: torch.device) -> Tensor:
    """A box count averaged over distributed processes, at least 1: the loss normaliser."""
    count = torch.tensor(float(count), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1)
