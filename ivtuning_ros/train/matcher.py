"""Hungarian matching of DINO's predictions to the ground truth (training only).

The cost of pairing a query with a target is the reference DINO's (REFERENCE_FACTS.md
section 2): ``cost_class`` x focal classification cost + ``cost_bbox`` x L1 on
normalised cxcywh + ``cost_giou`` x negative GIoU on xyxy.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

Indices = list[tuple[Tensor, Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, image by image.

    Targets are a list (one per image) of {"labels": int64 (N,), "boxes": (N, 4)
    cxcywh normalised to the network input}.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def forward(self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict]) -> Indices:
        """Match logits (B, Q, K) and boxes (B, Q, 4) cxcywh to the targets.

        Returns, per image, (query_idx, target_idx): int64 CPU tensors of equal
        length min(Q, N), sorted by query; empty for an image without targets.
        """
        return [self.match_image(logits, boxes, target)
                for logits, boxes, target in zip(pred_logits, pred_boxes, targets, strict=True)]

    def match_image(self, logits: Tensor, boxes: Tensor, target: dict) -> tuple[Tensor, Tensor]:
        """One image: logits (Q, K), boxes (Q, 4) -> (query_idx, target_idx)."""
        if len(target["labels"]) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty.clone()
        cost = self.cost_matrix(logits, boxes, target["labels"], target["boxes"])
        query_idx, target_idx = linear_sum_assignment(cost.cpu().numpy())
        return (torch.as_tensor(query_idx, dtype=torch.int64),
                torch.as_tensor(target_idx, dtype=torch.int64))

    def cost_matrix(self, logits: Tensor, boxes: Tensor, labels: Tensor,
                    target_boxes: Tensor) -> Tensor:
        """Pairing costs (Q, N) of logits (Q, K) and boxes (Q, 4) against N targets."""
        # float32: half-precision logs and products would distort the assignment
        logits, boxes, target_boxes = logits.float(), boxes.float(), target_boxes.float()
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return (self.cost_class * self.class_cost(logits, labels)
                + self.cost_bbox * torch.cdist(boxes, target_boxes, p=1)
                - self.cost_giou * giou)

    def class_cost(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Focal classification cost (Q, N): the focal loss of calling the query the
        target's class minus that of calling it not that class."""
        prob = logits.sigmoid()[:, labels]
        eps = 1e-8  # keeps the logs finite at probabilities 0 and 1
        alpha, gamma = self.focal_alpha, self.focal_gamma
        pos_cost = -alpha * (1 - prob) ** gamma * (prob + eps).log()
        neg_cost = -(1 - alpha) * prob**gamma * (1 - prob + eps).log()
        return pos_cost - neg_cost
