"""IV-tuning on a plain ViT (EVA02, CLIP, MAE, SAM, DINOv3 through timm).

The same prompter as on the Swin, at one width: the IR patch embedding is shaped like
the ViT's (p x p conv, no norm), MP-alpha fuses the RGB patch tokens (after the ViT's
own position embedding and pre-norm) with the IR tokens into P^0, and every layer runs
one MP-beta after its attention and MLP residuals with the cascaded prompt stream
(`cascade.prompted_layer`). Prompts act on patch tokens only: class and register
tokens, position embeddings (absolute or rotary) and SAM's windowed and global
attention are the ViT's own. A simple feature pyramid turns the 1/16 map(s) into the
heads' four maps.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...backbones.vit import (
    TokenLayout,
    block_residuals,
    build_vit,
    embed,
    grid_to_tokens,
    patch_grid,
)
from ...config import BackboneConfig, PrompterConfig
from ...heads.feature_pyramid import SimpleFeaturePyramid
from ..base import BackboneOutput, count
from .cascade import add_prompt, prompted_layer
from .prompted import PromptedBackbone
from .prompter import PrompterBeta


class IVTuningViT(PromptedBackbone):
    """Frozen timm ViT + trainable IR embedding and Modality-aware Prompter.

    Submodules: ``vit`` (frozen, timm layout), ``ir_patch_embed``, ``mp_alpha``,
    ``mp_beta[0][layer]`` (one stage; the paper's #TP) and ``pyramid`` (trained with
    the heads, not #TP).
    """

    frozen_name = "vit"

    def __init__(self, config: BackboneConfig, prompter: PrompterConfig) -> None:
        dim, depth = config.embed_dim, config.depths[0]
        super().__init__(config, prompter, [dim], [depth], ir_norm=False)
        self.vit = build_vit(config)
        self.feature_layers = list(config.feature_layers or [depth - 1])
        self.pyramid = SimpleFeaturePyramid(config.stage_dims, len(self.feature_layers))

    def neck(self) -> nn.Module:
        return self.pyramid

    def frozen_parts(self) -> list[tuple[str, int]]:
        blocks, patch_embed = self.vit.blocks, self.vit.patch_embed
        parts = [("vit.patch_embed", count(patch_embed)),
                 (f"vit.blocks ({len(blocks)} layers)", count(blocks))]
        rest = count(self.vit) - count(blocks) - count(patch_embed)
        if rest:
            parts.append(("vit (position embedding, tokens, norms)", rest))
        return parts

    def forward(self, rgb: Tensor, ir: Tensor | None = None) -> BackboneOutput:
        """Four maps (strides 4-32) from RGB and optional registered IR (see IVTuningSwin)."""
        return BackboneOutput(self.pyramid(self.layer_maps(rgb, ir)), ir is not None)

    def layer_maps(self, rgb: Tensor, ir: Tensor | None = None) -> list[Tensor]:
        """The patch tokens after each of ``feature_layers``, as (B, C, H/p, W/p) maps."""
        self.check_inputs(rgb, ir)
        x, layout = embed(self.vit, self.pad_to_patches(rgb))
        z_ir = self.ir_patch_embed(self.pad_to_patches(ir)) if ir is not None else None
        prompt = self.mp_alpha(patch_grid(x, layout), z_ir)  # P^0, eq. 6
        return self._layers(_adder(layout)(x, prompt), layout, prompt)

    def forward_frozen(self, rgb: Tensor) -> list[Tensor]:
        """The frozen ViT alone, without prompts, through the pyramid: the visible-only
        baseline of benchmarks."""
        self.check_inputs(rgb, None)
        x, layout = embed(self.vit, self.pad_to_patches(rgb))
        return self.pyramid(self._layers(x, layout, None))

    def _layers(self, x: Tensor, layout: TokenLayout, prompt: Tensor | None) -> list[Tensor]:
        betas = list(self.mp_beta[0]) if prompt is not None else []
        maps = []
        for index, block in enumerate(self.vit.blocks[: self.feature_layers[-1] + 1]):
            beta = betas[index] if index < len(betas) else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, prompt = checkpoint(_prompted_block, block, layout, x, beta, prompt,
                                       use_reentrant=False)
            else:
                x, prompt = _prompted_block(block, layout, x, beta, prompt)
            if index in self.feature_layers:
                maps.append(patch_grid(x, layout).permute(0, 3, 1, 2))
        return maps


def _prompted_block(block: nn.Module, layout: TokenLayout, x: Tensor,
                    beta: PrompterBeta | None, prompt: Tensor | None,
                    ) -> tuple[Tensor, Tensor | None]:
    attention, mlp = block_residuals(block, layout)
    return prompted_layer(attention, mlp, x, beta, prompt,
                          grid=lambda tokens: patch_grid(tokens, layout), add=_adder(layout))


def _adder(layout: TokenLayout):
    """(tokens, P) -> tokens with P added to the patch tokens, in place without autograd."""
    if not layout.sequence:
        return add_prompt

    def add(x: Tensor, prompt: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return x + grid_to_tokens(prompt, layout)
        patch_grid(x, layout).add_(prompt)
        return x

    return add

