"""IV-tuning on the Swin: a frozen torchvision Swin that receives infrared prompts.

RGB patch tokens plus the MP-alpha prompt P^0 enter the frozen Swin; the prompt
stream cascades through every block that carries an MP-beta (`cascade.prompted_layer`).
At a stage boundary the prompt passes through the frozen PatchMerging with the
tokens. The result equals the literal formulation of eq. 1 within fp32 rounding, in
eval and train mode (test/test_backbone.py).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...backbones.swin import build_swin, frozen_features, swin_stages, window_attention
from ...config import BackboneConfig, PrompterConfig
from ..base import BackboneOutput, count
from .cascade import add_prompt, prompted_layer
from .prompted import PromptedBackbone
from .prompter import PrompterBeta


class IVTuningSwin(PromptedBackbone):
    """Frozen torchvision Swin + trainable IR embedding and Modality-aware Prompter.

    Submodules: ``swin`` (frozen, torchvision layout), ``ir_patch_embed``,
    ``mp_alpha``, ``mp_beta[stage][block]`` (the paper's #TP), and
    ``out_norms`` (per-stage LayerNorms on the outputs; they belong to the
    task neck and are trained with the heads, not counted in #TP).
    """

    frozen_name = "swin"

    def __init__(self, config: BackboneConfig, prompter: PrompterConfig) -> None:
        super().__init__(config, prompter, config.stage_dims, config.depths, ir_norm=True)
        self.swin = build_swin(config)
        self.out_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in config.stage_dims)

    def neck(self) -> nn.Module:
        return self.out_norms

    def frozen_parts(self) -> list[tuple[str, int]]:
        parts = [("swin.patch_embed", count(self.swin.features[0]))]
        for stage, (merge, blocks) in enumerate(swin_stages(self.swin)):
            if merge is not None:
                parts.append((f"swin.patch_merging{stage - 1}", count(merge)))
            parts.append((f"swin.stage{stage} ({len(blocks)} blocks)", count(blocks)))
        return parts

    def forward(self, rgb: Tensor, ir: Tensor | None = None) -> BackboneOutput:
        """Four stage feature maps from an RGB image and an optional registered IR image.

        Args:
            rgb: normalised RGB (B, 3, H, W), any H and W.
            ir: normalised IR (B, ir_in_channels, H, W) in RGB geometry, or None
                when the IR camera is missing: M_P = 0 in MP-alpha, so the same weights
                run on RGB alone. (This is not the paper's "VIS-only" variant, Table
                VIII (c), which is a separately trained model.)
        """
        self.check_inputs(rgb, ir)
        z_vis = self.swin.features[0](self.pad_to_patches(rgb))
        z_ir = self.ir_patch_embed(self.pad_to_patches(ir)) if ir is not None else None
        prompt = self.mp_alpha(z_vis, z_ir)  # P^0, eq. 6
        return BackboneOutput(self._stages(add_prompt(z_vis, prompt), prompt),  # eq. 1
                              ir is not None)

    def forward_frozen(self, rgb: Tensor) -> list[Tensor]:
        """The frozen Swin alone, without prompts: the visible-only baseline of benchmarks."""
        self.check_inputs(rgb, None)
        return frozen_features(self.swin, self.out_norms, self.pad_to_patches(rgb))

    def _stages(self, x: Tensor, prompt: Tensor) -> list[Tensor]:
        """Run the four stages with the prompt stream through the MP-beta blocks."""
        features = []
        for (merge, blocks), betas, out_norm in zip(
            swin_stages(self.swin), self.mp_beta, self.out_norms, strict=True
        ):
            if merge is not None:
                x = merge(x)
                prompt = merge(prompt) if len(betas) else None
            for index, block in enumerate(blocks):
                beta = betas[index] if index < len(betas) else None
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    x, prompt = checkpoint(_prompted_block, block, x, beta, prompt,
                                           use_reentrant=False)
                else:
                    x, prompt = _prompted_block(block, x, beta, prompt)
            features.append(out_norm(x).permute(0, 3, 1, 2))
        return features


def _prompted_block(block: nn.Module, x: Tensor, beta: PrompterBeta | None,
                    prompt: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One Swin block (torchvision modules, re-composed) as a prompted layer."""
    return prompted_layer(lambda x: x + window_attention(block.norm1(x), block.attn),
                          lambda x: x + block.mlp(block.norm2(x)), x, beta, prompt)
