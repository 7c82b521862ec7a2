"""DINO detection head: neck, deformable encoder, two-stage query selection, decoder.

Behaviour follows the reference DINO used by the paper's detector (mmdet 3.x;
REFERENCE_FACTS.md section 5): post-norm deformable encoder, mixed query
selection (anchors from the top-k encoder proposals, learned content queries),
a decoder with iterative box refinement and per-layer class/box branches
(decoder_layers + 1 of each; the last serves the encoder proposals).

Padding follows mmdet: each image sits at the top left of the network input
(``valid_sizes``); padded tokens get masked position encodings, contribute no
value to any deformable attention and no proposal, and reference points are
normalised by the image extent and scaled by each level's valid ratio
(`padding.FeatureLevels`).

Shapes: B batch, S flattened tokens of all levels, L levels, Q queries,
D hidden width, K classes. Boxes are normalised (cx, cy, w, h) relative to the
image region of the network input (mmdet's ``img_shape``): the whole input when
nothing is padded. Everything is shape-static: spatial shapes are Python ints
read from tensor shapes, masks come from comparisons on the device, so the
forward captures into a CUDA graph. Geometry (positions, pixel centres,
proposals, valid ratios) is computed in the features' dtype, float32 at least,
on their device.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..box_ops import inverse_sigmoid
from ..config import DetectionConfig
from ..padding import FeatureLevels, SpatialShapes, feature_levels
from .channel_mapper import ChannelMapper
from .deformable_attention import MultiScaleDeformableAttention, level_sizes
from .layers import MLP, FeedForward
from .position_encoding import (
    coordinate_to_encoding,
    masked_sine_position_map,
    sine_position_map,
)

# The first backbone map has stride 4 (Swin's patch embedding, the ViT pyramid's finest).
FIRST_STRIDE = 4


class EncoderLayer(nn.Module):
    """Deformable self-attention -> norm1 -> FFN -> norm2 (post-norm)."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(
            embed_dim=dim, num_heads=heads, num_levels=levels, num_points=points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor,
                spatial_shapes: SpatialShapes, padding_mask: Tensor | None = None) -> Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes,
                                              padding_mask))
        return self.norm2(self.ffn(src))


class DecoderLayer(nn.Module):
    """Self-attention -> norm1 -> deformable cross-attention -> norm2 -> FFN -> norm3."""

    def __init__(self, dim: int, heads: int, levels: int, points: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dim=dim, num_heads=heads, num_levels=levels, num_points=points)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, query: Tensor, query_pos: Tensor, reference_points: Tensor,
                memory: Tensor, spatial_shapes: SpatialShapes,
                self_attn_mask: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        q = query + query_pos
        attended = self.self_attn(q, q, query, attn_mask=self_attn_mask, need_weights=False)[0]
        query = self.norm1(query + attended)
        query = self.norm2(query + self.cross_attn(query + query_pos, reference_points, memory,
                                                   spatial_shapes, memory_mask))
        return self.norm3(self.ffn(query))


class DINOHead(nn.Module):
    """DINO on the backbone's stage maps.

    forward(features) returns ``pred_logits`` (B, Q, K) and ``pred_boxes`` (B, Q, 4)
    of the last decoder layer; in training mode also ``aux_outputs`` (the earlier
    layers) and ``enc_outputs`` (the selected encoder proposals), for the losses.

    forward(features, valid_sizes=...) runs a padded batch: ``valid_sizes`` (B, 2)
    float is each image's (height, width) in network-input pixels, at the top left
    of the input (None: all image); ``input_size`` (H, W) is the network input's,
    by default four times the first stage map's (exact for inputs that are
    multiples of 4). Boxes are then normalised to each image's region, as mmdet's
    are to ``img_shape``.

    forward(features, denoising) also runs contrastive denoising queries (training
    only). ``denoising`` is any object with ``query`` (B, N, D), ``reference``
    (B, N, 4) normalised cxcywh and ``attn_mask`` (N + Q, N + Q) bool, True =
    blocked; ``train.denoising.DenoisingQueries`` is one, duck-typed here so the
    model does not depend on training code. The DN predictions come back as
    ``dn_outputs``, one {"pred_logits", "pred_boxes"} per computed decoder layer,
    and are excluded from every other key.
    """

    def __init__(self, config: DetectionConfig, stage_dims: list[int]) -> None:
        super().__init__()
        dim, levels = config.hidden_dim, config.num_levels
        self.backbone_stages = list(config.backbone_stages)
        self.num_queries = config.num_queries
        self.neck = ChannelMapper([stage_dims[s] for s in config.backbone_stages], dim,
                                  config.extra_levels)
        self.level_embed = nn.Parameter(torch.empty(levels, dim).normal_())
        layer_args = (dim, config.num_heads, levels, config.num_points, config.ffn_dim)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args)
                                     for _ in range(config.encoder_layers))
        self.memory_trans_fc = nn.Linear(dim, dim)
        self.memory_trans_norm = nn.LayerNorm(dim)
        self.query_embedding = nn.Embedding(config.num_queries, dim)
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args)
                                     for _ in range(config.decoder_layers))
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.decoder_norm = nn.LayerNorm(dim)
        branches = config.decoder_layers + 1
        self.cls_branches = nn.ModuleList(nn.Linear(dim, len(config.classes))
                                          for _ in range(branches))
        self.reg_branches = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(branches))
        # Label embedding of the denoising queries: used by training only.
        self.label_embedding = nn.Embedding(len(config.classes), dim)
        self._init_branches()

    def _init_branches(self) -> None:
        prior_bias = -math.log((1 - 0.01) / 0.01)  # focal-loss prior of 1% foreground
        for cls_branch, reg_branch in zip(self.cls_branches, self.reg_branches, strict=True):
            nn.init.constant_(cls_branch.bias, prior_bias)
            nn.init.zeros_(reg_branch.layers[-1].weight)
            nn.init.zeros_(reg_branch.layers[-1].bias)

    def forward(self, features: list[Tensor], denoising: Any = None,
                valid_sizes: Tensor | None = None,
                input_size: tuple[int, int] | None = None) -> dict:
        memory, levels = self.encode(features, valid_sizes, input_size)
        query, reference, enc_outputs = self.select_queries(memory, levels)
        if denoising is None:
            hidden, references = self.decode(query, reference, memory, levels)
            return self.predict(hidden, references, enc_outputs)
        return self.forward_denoising(denoising, query, reference, memory, levels, enc_outputs)

    def forward_denoising(self, denoising: Any, query: Tensor, reference: Tensor,
                          memory: Tensor, levels: FeatureLevels, enc_outputs: dict) -> dict:
        """Decode the DN queries (first N) together with the matching queries (last Q).

        The attention mask keeps the matching queries blind to the DN ones, so the
        matching part of the outputs is what ``forward(features)`` would compute.
        """
        num_dn = denoising.query.shape[1]
        query = torch.cat([denoising.query.to(query.dtype), query], dim=1)
        reference = torch.cat([denoising.reference.to(reference.dtype), reference], dim=1)
        hidden, references = self.decode(query, reference, memory, levels, denoising.attn_mask)
        outputs = self.predict([h[:, num_dn:] for h in hidden],
                               [r[:, num_dn:] for r in references], enc_outputs)
        outputs["dn_outputs"] = self.predict_layers([h[:, :num_dn] for h in hidden],
                                                    [r[:, :num_dn] for r in references])
        return outputs

    def encode(self, features: list[Tensor], valid_sizes: Tensor | None = None,
               input_size: tuple[int, int] | None = None) -> tuple[Tensor, FeatureLevels]:
        """Backbone stage maps -> encoder memory (B, S, D) and its token layout."""
        maps = self.neck([features[s] for s in self.backbone_stages])
        dtype = _geometry_dtype(maps[0])
        levels = feature_levels([(m.shape[2], m.shape[3]) for m in maps], valid_sizes,
                                input_size or self._input_size(features), dtype)
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
        pos = self._position_encoding(levels, src.shape[-1] // 2, dtype, src.device)
        pos = pos.to(src.dtype)
        reference = _encoder_reference_points(levels, dtype, src.device)
        reference = reference.expand(src.shape[0], -1, -1, -1)
        for layer in self.encoder:
            src = layer(src, pos, reference, levels.spatial_shapes, levels.mask)
        return src, levels

    @staticmethod
    def _input_size(features: list[Tensor]) -> tuple[int, int]:
        """The network input (H, W) from the stride-4 stage map: exact for multiples of 4."""
        height, width = features[0].shape[-2:]
        return height * FIRST_STRIDE, width * FIRST_STRIDE

    def _position_encoding(self, levels: FeatureLevels, num_feats: int, dtype: torch.dtype,
                           device: torch.device) -> Tensor:
        """(B, S, D) sine encodings plus level embeddings; B = 1 without padding."""
        if levels.masks is None:
            maps = [sine_position_map(h, w, num_feats, 20.0, dtype, device)[None]
                    for h, w in levels.spatial_shapes]
        else:
            maps = [masked_sine_position_map(mask, num_feats, 20.0, dtype)
                    for mask in levels.masks]
        return torch.cat([pos + embed for pos, embed in zip(maps, self.level_embed, strict=True)],
                         dim=1)

    def select_queries(self, memory: Tensor,
                       levels: FeatureLevels) -> tuple[Tensor, Tensor, dict]:
        """Two-stage mixed query selection.

        Returns content queries (B, Q, D) (the learned embedding), anchor boxes
        (B, Q, 4) from the top-Q encoder proposals by best class logit, and those
        proposals' predictions for the encoder loss. Padded tokens and proposals
        outside (0.01, 0.99) get zero memory and +inf boxes, as in mmdet: they may
        still be selected (their score is a constant), with the box (1, 1, 1, 1).
        """
        proposals, valid = _encoder_proposals(levels, _geometry_dtype(memory), memory.device)
        output_memory = memory.masked_fill(~valid[..., None], 0.0)
        output_memory = self.memory_trans_norm(self.memory_trans_fc(output_memory))
        enc_logits = self.cls_branches[-1](output_memory)
        enc_boxes_unact = self.reg_branches[-1](output_memory) + proposals.to(memory.dtype)
        num_queries = min(self.num_queries, memory.shape[1])
        topk = enc_logits.max(dim=-1).values.topk(num_queries, dim=1).indices
        topk_logits = torch.gather(enc_logits, 1,
                                   topk[..., None].expand(-1, -1, enc_logits.shape[-1]))
        topk_boxes_unact = torch.gather(enc_boxes_unact, 1, topk[..., None].expand(-1, -1, 4))
        enc_outputs = {"pred_logits": topk_logits, "pred_boxes": topk_boxes_unact.sigmoid()}
        reference = topk_boxes_unact.detach().sigmoid()
        query = self.query_embedding.weight[:num_queries][None].expand(memory.shape[0], -1, -1)
        return query, reference, enc_outputs

    def decode(self, query: Tensor, reference: Tensor, memory: Tensor, levels: FeatureLevels,
               self_attn_mask: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Decoder with iterative box refinement.

        Returns the normed hidden states of every layer and the reference boxes
        each layer read (refs[l] is layer l's input; the refined boxes stay
        attached to the graph for "look forward twice" training).
        """
        hidden, references = [], [reference]
        memory_mask = levels.mask
        for index, layer in enumerate(self.decoder):
            level_reference = _scaled_to_levels(reference, levels)
            # mmdet encodes the query position from the box scaled to level 0. The
            # encoding is float32 at least, autocast may return half: both casts keep
            # the query's dtype.
            sine = coordinate_to_encoding(level_reference[:, :, 0], query.shape[-1] // 2)
            query_pos = self.ref_point_head(sine.to(query.dtype)).to(query.dtype)
            query = layer(query, query_pos, level_reference, memory, levels.spatial_shapes,
                          self_attn_mask, memory_mask)
            hidden.append(self.decoder_norm(query))
            if index < len(self.decoder) - 1:  # the last refinement is never read
                refined = (self.reg_branches[index](query)
                           + inverse_sigmoid(reference, eps=1e-3)).sigmoid()
                references.append(refined)
                reference = refined.detach()
        return hidden, references

    def predict(self, hidden: list[Tensor], references: list[Tensor], enc_outputs: dict) -> dict:
        """The last layer's predictions; in training also ``aux_outputs`` and ``enc_outputs``."""
        outputs = self.predict_layers(hidden, references)
        result = dict(outputs[-1])
        if self.training:
            result["aux_outputs"] = outputs[:-1]
            result["enc_outputs"] = enc_outputs
        return result

    def predict_layers(self, hidden: list[Tensor], references: list[Tensor]) -> list[dict]:
        """Class logits and boxes per decoder layer: all in training, the last in eval."""
        layers = range(len(hidden)) if self.training else [len(hidden) - 1]
        return [
            {"pred_logits": self.cls_branches[i](hidden[i]),
             "pred_boxes": (self.reg_branches[i](hidden[i])
                            + inverse_sigmoid(references[i], eps=1e-5)).sigmoid()}
            for i in layers
        ]


def _geometry_dtype(tensor: Tensor) -> torch.dtype:
    """The tensor's dtype, float32 at least: half-precision pixel centres and proposals
    would blur neighbouring tokens (autocast computes them in float32 too)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _scaled_to_levels(reference: Tensor, levels: FeatureLevels) -> Tensor:
    """(B, Q, 4) boxes normalised to the image -> (B, Q, L, 4) normalised to each level's
    map: mmdet's ``reference_points[:, :, None] * cat([valid_ratios] * 2, -1)[:, None]``."""
    if levels.valid_ratios is None:
        return reference[:, :, None, :].expand(-1, -1, len(levels.spatial_shapes), -1)
    return reference[:, :, None] * levels.valid_ratios.repeat(1, 1, 2)[:, None]


def _pixel_centres(spatial_shapes: SpatialShapes, extents: Tensor) -> Tensor:
    """(B, S, 2) (x, y) pixel centres of every level, row-major, levels concatenated:
    ((j + 0.5) / extent_x, (i + 0.5) / extent_y) with ``extents`` (B, L, 2) (x, y).

    Divided by device tensors, as mmdet divides: on CUDA a Python divisor would
    become a multiplication by its reciprocal, one rounding more.
    """
    centres = []
    for level, (height, width) in enumerate(spatial_shapes):
        x = _centres(width, extents[:, level, 0])[:, None, :].expand(-1, height, -1)
        y = _centres(height, extents[:, level, 1])[:, :, None].expand(-1, -1, width)
        centres.append(torch.stack([x, y], dim=-1).flatten(1, 2))
    return torch.cat(centres, dim=1)


def _centres(size: int, extent: Tensor) -> Tensor:
    """(B,) extents -> (B, size): (i + 0.5) / extent, in the extent's dtype."""
    positions = torch.arange(size, dtype=extent.dtype, device=extent.device) + 0.5
    return positions / extent[:, None]


def _encoder_reference_points(levels: FeatureLevels, dtype: torch.dtype,
                              device: torch.device) -> Tensor:
    """(B, S, L, 2) (x, y) reference points of the encoder tokens; B = 1 without padding.

    mmdet's ``get_encoder_reference_points``: each token's pixel centre over its
    level's image extent (valid ratio x map size), times every level's valid ratio.
    """
    num_levels = len(levels.spatial_shapes)
    sizes = level_sizes(levels.spatial_shapes, device, dtype)[None]
    if levels.valid_ratios is None:
        centres = _pixel_centres(levels.spatial_shapes, sizes)
        return centres[:, :, None, :].expand(-1, -1, num_levels, -1)
    centres = _pixel_centres(levels.spatial_shapes, levels.valid_ratios * sizes)
    return centres[:, :, None] * levels.valid_ratios[:, None]


def _encoder_proposals(levels: FeatureLevels, dtype: torch.dtype,
                       device: torch.device) -> tuple[Tensor, Tensor]:
    """One proposal per encoder token: its pixel centre over its level's image extent
    (valid rows and columns), with w = h = 0.05 * 2^level.

    Returns unsigmoided proposals (B, S, 4) (+inf where invalid) and the valid mask
    (B, S); B = 1 without padding. Padded tokens and proposals with any coordinate
    outside (0.01, 0.99) are invalid (mmdet's ``gen_encoder_output_proposals``).
    """
    extents = levels.valid_counts
    if extents is None:
        extents = level_sizes(levels.spatial_shapes, device, dtype)[None]
    centres = _pixel_centres(levels.spatial_shapes, extents)
    sizes = torch.cat([
        torch.full((h * w, 2), 0.05 * 2.0**level, dtype=dtype, device=device)
        for level, (h, w) in enumerate(levels.spatial_shapes)
    ])
    proposals = torch.cat([centres, sizes.expand(centres.shape[0], -1, -1)], dim=-1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(dim=-1)
    if levels.mask is not None:
        valid = valid & ~levels.mask
    logits = torch.log(proposals / (1 - proposals))
    return logits.masked_fill(~valid[..., None], float("inf")), valid


def build_dino(config: DetectionConfig, stage_dims: list[int]) -> DINOHead:
    """The DINO head for a backbone whose stages have ``stage_dims`` channels."""
    return DINOHead(config, stage_dims)
