"""Running one frozen Swin on two streams (RGB and IR) as CPAL and DRA do: where both
streams take the same frozen op, it runs once on the two as one batch."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import count
from .frozen_only import FrozenSwin


def on_both(op: Callable[[Tensor], Tensor], rgb: Tensor,
            ir: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """op(rgb), op(ir) as one batched call; (op(rgb), None) without IR."""
    if ir is None:
        return op(rgb), None
    out = op(torch.cat([rgb, ir]))
    return out[: rgb.shape[0]], out[rgb.shape[0]:]


def ir_as_rgb(ir: Tensor) -> Tensor:
    """IR (B, 1 or 3, H, W) as the frozen RGB stem's 3-channel input: grey replicated (the
    public CPAL code does so)."""
    return ir if ir.shape[1] == 3 else ir[:, :1].expand(-1, 3, -1, -1)


def stage_widths(input_width: int, patch_size: int, stages: int = 4) -> list[int]:
    """Token-grid width of each Swin stage for frames letterboxed to ``input_width``."""
    widths = [math.ceil(input_width / patch_size)]
    for _ in range(stages - 1):
        widths.append(math.ceil(widths[-1] / 2))
    return widths


class TwoStreamSwin(FrozenSwin):
    """What CPAL and DRA share: the frozen Swin (``swin``) run on RGB and on IR, one set of
    output norms (``out_norms``, the neck) for both streams."""

    def frozen_parts(self) -> list[tuple[str, int]]:
        return [("swin (both streams)", count(self.swin))]

    def stems(self, rgb: Tensor, ir: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The frozen patch embedding of both streams (IR grey replicated to 3 channels)."""
        self.check_inputs(rgb, ir)
        ir3 = self.pad_to_patches(ir_as_rgb(ir)) if ir is not None else None
        return on_both(self.swin.features[0], self.pad_to_patches(rgb), ir3)
