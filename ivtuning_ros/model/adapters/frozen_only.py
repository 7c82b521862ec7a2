"""No adapter: the frozen Swin alone on RGB (``method: none``).

The visible-only model every adapter method can start from on equal terms: `ivtuning
compare` trains its heads (and, standing in for a public checkpoint, its Swin) on RGB,
then gives each method the same Swin, output norms and heads with its own parts at their
initialisation. IR is accepted and ignored (``ir_used`` is False).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..backbones.swin import build_swin, frozen_features
from ..config import ModelConfig
from .base import AdaptedBackbone, BackboneOutput, count


class FrozenSwin(AdaptedBackbone):
    """Frozen torchvision Swin (``swin``) + ``out_norms`` (the neck); nothing else trains."""

    frozen_name = "swin"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.patch_size = config.backbone.patch_size
        self.ir_in_channels = config.prompter.ir_in_channels
        self.stage_dims = config.backbone.stage_dims
        self.swin = build_swin(config.backbone)
        self.out_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in self.stage_dims)

    def adapter_parts(self) -> dict[str, nn.Module]:
        return {}

    def neck(self) -> nn.Module:
        return self.out_norms

    def frozen_parts(self) -> list[tuple[str, int]]:
        return [("swin", count(self.swin))]

    def forward(self, rgb: Tensor, ir: Tensor | None = None) -> BackboneOutput:
        self.check_inputs(rgb, ir)
        return BackboneOutput(frozen_features(self.swin, self.out_norms,
                                              self.pad_to_patches(rgb)), False)

    def forward_frozen(self, rgb: Tensor) -> list[Tensor]:
        self.check_inputs(rgb, None)
        return frozen_features(self.swin, self.out_norms, self.pad_to_patches(rgb))
