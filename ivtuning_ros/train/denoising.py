"""Contrastive denoising (CDN) queries for DINO training (REFERENCE_FACTS.md section 2).

Every ground-truth box enters the decoder as noised copies in several groups. Each
group holds a positive copy of every box (small noise; the query must reconstruct
the box) and a negative copy (larger noise; the query must predict "no object").
The attention mask keeps the matching queries from seeing the answers and the
groups from seeing each other.

Layout of the N = pad_size DN queries of one image: group g occupies
[2 g M, 2 (g + 1) M) with M = max_gt; its first M slots are the positives of the
image's boxes in target order, its last M the negatives; slots beyond an image's
own box count are padding (zero query, centred reference) and get no box loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..model.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh


@dataclass
class DenoisingConfig:
    """Noise and size of the DN queries; the defaults are the reference DINO's on M3FD.

    ``num_dn_queries`` sets the number of groups: num_dn_queries // max_gt (at least 1).
    With probability ``label_noise_scale`` / 2 a label becomes a uniformly random class.
    Box corners move by up to ``box_noise_scale`` half widths/heights (positives) or
    between one and two (negatives).
    """

    num_dn_queries: int = 100
    label_noise_scale: float = 0.5
    box_noise_scale: float = 1.0


@dataclass
class DenoisingQueries:
    """What the DINO head and the criterion need of one batch's DN queries.

    ``query`` (B, N, D) label embeddings of the noised labels; ``reference`` (B, N, 4)
    noised boxes, normalised cxcywh in [0, 1]; ``attn_mask`` (N + Q, N + Q) bool,
    True = blocked, for nn.MultiheadAttention with the DN queries first;
    ``positive_indices`` per image (query_idx, target_idx) int64 pairs of every
    positive DN query and the target it copies, in the matcher's format.
    """

    query: Tensor
    reference: Tensor
    attn_mask: Tensor
    num_groups: int
    max_gt: int
    pad_size: int
    positive_indices: list[tuple[Tensor, Tensor]]


def make_denoising_queries(targets: list[dict], label_embedding: nn.Embedding, num_classes: int,
                           num_matching_queries: int, config: DenoisingConfig,
                           generator: torch.Generator | None = None) -> DenoisingQueries | None:
    """DN queries for a batch of targets ({"labels": (N,), "boxes": (N, 4) cxcywh}).

    ``num_matching_queries`` is the number of matching queries the head decodes
    (min(num_queries, encoder tokens)). ``generator`` makes the noise reproducible;
    it may live on another device than the targets. Returns None when no image has
    a target: there is nothing to denoise.
    """
    counts = [len(target["labels"]) for target in targets]
    max_gt = max(counts, default=0)
    if max_gt == 0:
        return None
    num_groups = max(1, config.num_dn_queries // max_gt)
    device = label_embedding.weight.device
    labels, boxes, valid = _pad_targets(targets, max_gt, device)
    # (B, 2G, M): even copies are the positives, odd copies the negatives
    copies = 2 * num_groups
    labels = labels[:, None].expand(-1, copies, -1)
    boxes = boxes[:, None].expand(-1, copies, -1, -1)
    negative = (torch.arange(copies, device=device) % 2 == 1)[None, :, None]
    labels = _noise_labels(labels, num_classes, config.label_noise_scale, generator)
    boxes = _noise_boxes(boxes, negative, config.box_noise_scale, generator)
    valid = valid[:, None].expand(-1, copies, -1)
    query = label_embedding(labels) * valid[..., None]
    # padding sits at the centre: the sigmoid of the zero logits the reference pads with
    reference = boxes.where(valid[..., None], torch.full_like(boxes, 0.5))
    batch, pad_size = len(targets), copies * max_gt
    return DenoisingQueries(
        query=query.reshape(batch, pad_size, -1),
        reference=reference.reshape(batch, pad_size, 4),
        attn_mask=_attention_mask(pad_size, 2 * max_gt, num_matching_queries, device),
        num_groups=num_groups,
        max_gt=max_gt,
        pad_size=pad_size,
        positive_indices=[_positive_indices(count, num_groups, max_gt, device)
                          for count in counts],
    )


def _pad_targets(targets: list[dict], max_gt: int,
                 device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Labels (B, M), boxes (B, M, 4) and a valid mask (B, M), padded to M = max_gt."""
    batch = len(targets)
    labels = torch.zeros(batch, max_gt, dtype=torch.int64, device=device)
    boxes = torch.full((batch, max_gt, 4), 0.5, device=device)
    valid = torch.zeros(batch, max_gt, dtype=torch.bool, device=device)
    for index, target in enumerate(targets):
        count = len(target["labels"])
        labels[index, :count] = target["labels"]
        boxes[index, :count] = target["boxes"]
        valid[index, :count] = True
    return labels, boxes, valid


def _noise_labels(labels: Tensor, num_classes: int, noise_scale: float,
                  generator: torch.Generator | None) -> Tensor:
    """Replace each label, with probability noise_scale / 2, by a uniformly random class."""
    flip = _uniform(labels.shape, generator, labels.device) < noise_scale * 0.5
    random = (_uniform(labels.shape, generator, labels.device) * num_classes).long()
    # the clamp guards against float rounding of u * K up to K
    return labels.where(~flip, random.clamp(max=num_classes - 1))


def _noise_boxes(boxes: Tensor, negative: Tensor, noise_scale: float,
                 generator: torch.Generator | None) -> Tensor:
    """Move each xyxy corner of cxcywh boxes (..., 4) by s * noise_scale * half its box's
    width/height, with |s| in [0, 1) for positives and [1, 2) where ``negative``."""
    half_size = torch.cat([boxes[..., 2:], boxes[..., 2:]], dim=-1) / 2
    magnitude = _uniform(boxes.shape, generator, boxes.device) + negative[..., None]
    sign = torch.where(_uniform(boxes.shape, generator, boxes.device) < 0.5, -1.0, 1.0)
    corners = box_cxcywh_to_xyxy(boxes) + sign * magnitude * noise_scale * half_size
    return box_xyxy_to_cxcywh(corners.clamp(0, 1)).clamp(0, 1)


def _uniform(shape: torch.Size, generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """U[0, 1) samples on ``device``, drawn on the generator's own device."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def _attention_mask(pad_size: int, group_size: int, num_matching_queries: int,
                    device: torch.device) -> Tensor:
    """(N + Q, N + Q) bool, True = blocked: matching queries see no DN query and DN
    queries see only their own group (and every matching query)."""
    size = pad_size + num_matching_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[pad_size:, :pad_size] = True
    group = torch.arange(pad_size, device=device) // group_size
    mask[:pad_size, :pad_size] = group[:, None] != group[None, :]
    return mask


def _positive_indices(count: int, num_groups: int, max_gt: int,
                      device: torch.device) -> tuple[Tensor, Tensor]:
    """(query_idx, target_idx) of one image's positive DN queries, group by group."""
    target_idx = torch.arange(count, device=device)
    group_start = torch.arange(num_groups, device=device)[:, None] * 2 * max_gt
    return (group_start + target_idx).flatten(), target_idx.repeat(num_groups)
