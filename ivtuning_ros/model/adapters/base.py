"""The contract between a frozen backbone with its adapter and everything downstream.

Heads, engine, training, checkpoints (the frozen base's fingerprint), `ivtuning info`
and the parameter summary use a backbone only through `AdaptedBackbone`, so a config
can name any foundation model and any adapter method and nothing else changes.
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn


class BackboneOutput(NamedTuple):
    """features: four maps (B, C_s, H/4/2^s, W/4/2^s); ir_used: False in RGB-only mode."""

    features: list[Tensor]
    ir_used: bool


class AdaptedBackbone(nn.Module):
    """A frozen foundation model plus what a method trains on top of it.

    Subclasses set ``frozen_name`` (the attribute holding the frozen model), ``stage_dims``
    (channels of the four output maps), ``patch_size`` and ``ir_in_channels``, and define:

    * ``forward(rgb, ir) -> BackboneOutput`` (``ir`` None: RGB only);
    * ``forward_frozen(rgb) -> list[Tensor]``: the frozen model alone, for benchmarks;
    * ``adapter_parts() -> dict[str, nn.Module]``: what the method trains inside the
      backbone and the paper counts as #TP;
    * ``neck() -> nn.Module``: layers on the outputs trained with the heads (not #TP);
    * ``reusable_parts() -> dict[str, nn.Module]``: frozen parts learnt by the method
      itself and shared by tasks (DRA's modality LoRA); none by default;
    * ``frozen_parts() -> list[tuple[str, int]]``: the frozen model's parameters by part,
      for the summary.
    """

    frozen_name: str
    stage_dims: list[int]
    patch_size: int
    ir_in_channels: int

    @property
    def frozen(self) -> nn.Module:
        return getattr(self, self.frozen_name)

    def reusable_parts(self) -> dict[str, nn.Module]:
        return {}

    def frozen_modules(self) -> list[nn.Module]:
        """What a task's training must leave untouched: the foundation model and the
        reusable parts."""
        return [self.frozen, *self.reusable_parts().values()]

    def train(self, mode: bool = True) -> AdaptedBackbone:
        """Train the adapter; the frozen model always stays in eval mode."""
        super().train(mode)
        self.frozen.eval()
        return self

    def check_inputs(self, rgb: Tensor, ir: Tensor | None) -> None:
        """Raise ValueError naming the fix for images this backbone cannot take."""
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must be (B, 3, H, W), got {tuple(rgb.shape)}")
        if ir is None:
            return
        if ir.dim() != 4 or ir.shape[1] != self.ir_in_channels:
            raise ValueError(
                f"ir must be (B, {self.ir_in_channels}, H, W) for this model "
                f"(prompter.ir_in_channels={self.ir_in_channels}), got {tuple(ir.shape)}"
            )
        if ir.shape[0] != rgb.shape[0] or ir.shape[2:] != rgb.shape[2:]:
            raise ValueError(
                f"ir {tuple(ir.shape)} must match rgb {tuple(rgb.shape)} in batch and size: "
                "register IR onto the RGB image first"
            )

    def pad_to_patches(self, image: Tensor) -> Tensor:
        """Pad right/bottom to whole patches, as detection backbones do."""
        p = self.patch_size
        return F.pad(image, (0, -image.shape[3] % p, 0, -image.shape[2] % p))


def count(module: nn.Module) -> int:
    """Number of parameters in a module."""
    return sum(p.numel() for p in module.parameters())
