"""What the Swin and the ViT IV-tuning backbones share: the trainable parts the paper
counts as #TP (IR patch embedding, MP-alpha, one MP-beta per block of the first
``beta_blocks`` blocks) and the gradient-checkpointing switch."""
from __future__ import annotations

from torch import nn

from ...config import BackboneConfig, PrompterConfig
from ..base import AdaptedBackbone
from .ir_embed import IRPatchEmbed
from .prompter import PrompterAlpha, PrompterBeta


class PromptedBackbone(AdaptedBackbone):
    """Builds ``ir_patch_embed``, ``mp_alpha`` and ``mp_beta[stage][block]`` for stages of
    widths ``dims`` and ``depths`` blocks (a plain ViT is one stage)."""

    def __init__(self, config: BackboneConfig, prompter: PrompterConfig, dims: list[int],
                 depths: list[int], ir_norm: bool) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.ir_in_channels = prompter.ir_in_channels
        self.stage_dims = config.stage_dims
        self.ir_patch_embed = IRPatchEmbed(prompter.ir_in_channels, dims[0], config.patch_size,
                                           norm=ir_norm)
        self.mp_alpha = PrompterAlpha(dims[0], prompter.alpha_hidden, prompter.split_ratio)
        remaining = sum(depths) if prompter.beta_blocks is None else prompter.beta_blocks
        self.mp_beta = nn.ModuleList()
        for dim, depth in zip(dims, depths, strict=True):
            prompted = max(0, min(depth, remaining))
            remaining -= prompted
            self.mp_beta.append(nn.ModuleList(
                PrompterBeta(dim, prompter.beta_hidden, prompter.split_ratio)
                for _ in range(prompted)))
        # Recompute each block's activations in the backward pass instead of storing them:
        # trades compute for the memory that training large backbones at full size needs.
        self.gradient_checkpointing = False

    def adapter_parts(self) -> dict[str, nn.Module]:
        return {"ir_patch_embed": self.ir_patch_embed, "mp_alpha": self.mp_alpha,
                "mp_beta": self.mp_beta}
