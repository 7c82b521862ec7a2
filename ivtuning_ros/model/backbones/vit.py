"""Frozen plain ViTs from timm (EVA02, CLIP, MAE, SAM, DINOv3), run layer by layer.

timm builds the model and owns every weight. IV-tuning needs to step in between the
two residuals of each transformer layer, which timm's block ``forward`` does not
expose, so this module re-composes each block from its own submodules, as
`swin.window_attention` does for the Swin:

    attention residual:  x + ls1(attn(norm1(x)))     (SAM: inside its windows)
    MLP residual:        x + ls2(mlp(norm2(x)))

Three block families cover the six models: timm's ``vision_transformer.Block`` (CLIP,
MAE), ``eva.EvaBlock`` (EVA02, DINOv3: rotary embeddings, layer scale as ``gamma``)
and ``vision_transformer_sam.Block`` (windowed and global attention on a token grid).
test/test_vit_backbone.py checks the re-composition against timm's own forward.

Tokens are (B, T, C) with ``prefix`` class/register tokens first (ViT, EVA), or a
(B, H, W, C) grid (SAM). `patch_grid` views the patch tokens as a grid either way.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import timm
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models.eva import EvaBlock
from timm.models.vision_transformer import Block as ViTBlock
from timm.models.vision_transformer_sam import Block as SAMBlock
from timm.models.vision_transformer_sam import window_partition, window_unpartition
from torch import Tensor, nn

from ..config import BackboneConfig

Residual = Callable[[Tensor], Tensor]


class TokenLayout(NamedTuple):
    """Where the patch tokens sit: after ``prefix`` tokens of a (B, T, C) sequence, or a
    (B, H, W, C) grid (``sequence`` False); ``rope``: the rotary embedding, if any."""

    prefix: int
    height: int
    width: int
    sequence: bool
    rope: Tensor | None


def build_vit(config: BackboneConfig) -> nn.Module:
    """The timm model a config names, with random weights, frozen, in eval mode.

    The patch size and sizes are the config's (a checkpoint with another patch size is
    resampled on loading; small test models keep the family's architecture), position
    embeddings follow the input size, and there is no classifier.
    """
    kwargs: dict = {"patch_size": config.patch_size, "num_classes": 0,
                    "embed_dim": config.embed_dim, "depth": config.depths[0],
                    "num_heads": config.num_heads[0]}
    if config.pretrain_size:
        kwargs["img_size"] = config.pretrain_size
    else:
        kwargs["dynamic_img_size"] = True
    vit = timm.create_model(config.timm_name, pretrained=False, **kwargs)
    vit.requires_grad_(False)
    return vit.eval()


def embed(vit: nn.Module, rgb: Tensor) -> tuple[Tensor, TokenLayout]:
    """Patch embedding, position embedding, prefix tokens and pre-norm: the tokens that
    enter the first block. ``rgb`` (B, 3, H, W) with H and W whole patches."""
    x = vit.patch_embed(rgb)  # (B, H/p, W/p, C): timm's NHWC output for these models
    height, width = x.shape[1:3]
    if isinstance(vit.blocks[0], SAMBlock):
        if vit.pos_embed is not None:
            x = x + resample_abs_pos_embed_nhwc(vit.pos_embed, (height, width))
        return vit.norm_pre(x), TokenLayout(0, height, width, False, None)
    rope = None
    # timm's own position step (absolute resampled to the grid, prefix tokens, rotary
    # tables); it has no public name, and forward_features would run the blocks too.
    if isinstance(vit.blocks[0], EvaBlock):
        x, rope = vit._pos_embed(x)
    else:
        x = vit._pos_embed(x)
    return vit.norm_pre(x), TokenLayout(vit.num_prefix_tokens, height, width, True, rope)


def patch_grid(x: Tensor, layout: TokenLayout) -> Tensor:
    """The patch tokens of ``x`` as a (B, H, W, C) view (no copy)."""
    if not layout.sequence:
        return x
    return x[:, layout.prefix:].unflatten(1, (layout.height, layout.width))


def grid_to_tokens(grid: Tensor, layout: TokenLayout) -> Tensor:
    """A (B, H, W, C) patch grid in the layout of the tokens, prefix positions zero."""
    if not layout.sequence:
        return grid
    return F.pad(grid.flatten(1, 2), (0, 0, layout.prefix, 0))


def block_residuals(block: nn.Module, layout: TokenLayout) -> tuple[Residual, Residual]:
    """(attention residual, MLP residual) of one timm block, each tokens -> tokens."""
    if isinstance(block, EvaBlock):
        def attention(x: Tensor) -> Tensor:
            out = block.attn(block.norm1(x), rope=layout.rope)
            return x + (out if block.gamma_1 is None else block.gamma_1 * out)

        def mlp(x: Tensor) -> Tensor:
            out = block.mlp(block.norm2(x))
            return x + (out if block.gamma_2 is None else block.gamma_2 * out)

        return attention, mlp
    if isinstance(block, SAMBlock):
        return (lambda x: x + _sam_attention(block, block.norm1(x)),
                lambda x: x + block.ls2(block.mlp(block.norm2(x))))
    if isinstance(block, ViTBlock):
        return (lambda x: x + block.ls1(block.attn(block.norm1(x))),
                lambda x: x + block.ls2(block.mlp(block.norm2(x))))
    raise TypeError(f"timm block type {type(block).__name__} is not supported; "
                    "supported: vision_transformer.Block, eva.EvaBlock, SAM Block")


def _sam_attention(block: SAMBlock, x: Tensor) -> Tensor:
    """SAM's attention on a (B, H, W, C) grid: in windows, or global (window_size 0)."""
    if block.window_size == 0:
        return block.ls1(block.attn(x))
    height, width = x.shape[1:3]
    windows, padded = window_partition(x, block.window_size)
    out = block.ls1(block.attn(windows))
    return window_unpartition(out, block.window_size, (height, width), padded)
