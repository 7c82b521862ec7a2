"""CPAL's trainable modules (SEED_METHODS.md section 1.3): the multi-modal cross prompter
(MCP) and the gated perception module (GPM)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CrossPrompter(nn.Module):
    """One MCP sub-block: grouped 1x1 convs C -> h -> h -> C (groups g), dropout before
    the up projection, no non-linearity (as the public code). Channels-last, as einsums
    over the channel groups. The up projection starts at zero (the public code zeroes all
    three convs, which leaves only the up bias able to learn: not copied).
    Parameters: 5C + 32 for h = 8, g = 4."""

    def __init__(self, dim: int, hidden: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, hidden, 1, groups=groups)
        self.mid = nn.Conv2d(hidden, hidden, 1, groups=groups)
        self.up = nn.Conv2d(hidden, dim, 1, groups=groups)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        return _grouped(self.dropout(_grouped(_grouped(x, self.down), self.mid)), self.up)


def _grouped(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A grouped 1x1 conv on channels-last tokens."""
    groups = conv.groups
    weight = conv.weight.view(groups, conv.out_channels // groups, conv.in_channels // groups)
    y = torch.einsum("...gi,goi->...go", x.unflatten(-1, (groups, -1)), weight)
    return y.flatten(-2) + conv.bias


class StreamPrompters(nn.Module):
    """The MCP of one sub-layer for both directions: one module used both ways (the public
    code, ``share_directions``) or one per direction."""

    def __init__(self, dim: int, hidden: int, groups: int, dropout: float,
                 share_directions: bool) -> None:
        super().__init__()
        self.to_ir = CrossPrompter(dim, hidden, groups, dropout)
        self.to_rgb = None if share_directions else CrossPrompter(dim, hidden, groups, dropout)

    def prompt(self, source: Tensor, target: str) -> Tensor:
        """The prompt computed from ``source`` tokens for the ``target`` stream."""
        module = self.to_rgb if target == "rgb" and self.to_rgb is not None else self.to_ir
        return module(source)


class CPALLayer(nn.Module):
    """MCP after the attention residual (eqs. 7-9) and after the MLP residual (eqs. 10-12)."""

    def __init__(self, dim: int, hidden: int, groups: int, dropout: float,
                 share_directions: bool) -> None:
        super().__init__()
        self.after_attention = StreamPrompters(dim, hidden, groups, dropout, share_directions)
        self.after_mlp = StreamPrompters(dim, hidden, groups, dropout, share_directions)


class GatedPerception(nn.Module):
    """GPM (eqs. 13-18), the public code's reading: a shared 1x1 conv C -> C/r; query from
    IR, key and value from RGB through Linear(W, W) on the width axis; attention between
    rows per channel; a sigmoid forget gate; the residual conv(RGB); a 1x1 conv back to C.
    ``width`` is the stage's token-grid width, fixed by the model's input width.
    ``residual`` (not the paper): RGB features + a zero-initialised output, an identity at
    initialisation."""

    def __init__(self, dim: int, width: int, reduction: int, residual: bool = False) -> None:
        super().__init__()
        reduced = dim // reduction
        self.width = width
        self.residual = residual
        self.conv_in = nn.Conv2d(dim, reduced, 1)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.forget = nn.Linear(width, width)
        self.conv_out = nn.Conv2d(reduced, dim, 1)
        if residual:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, rgb: Tensor, ir: Tensor | None) -> Tensor:
        """(B, C, H, W) maps of the two streams -> (B, C, H, W); ``ir`` None: V_r = 0."""
        if rgb.shape[-1] != self.width:
            raise ValueError(
                f"CPAL's gated fusion was built for token rows {self.width} wide, got "
                f"{rgb.shape[-1]}: feed frames letterboxed to the config's input.width")
        u_rgb = self.conv_in(rgb)
        fused = u_rgb
        if ir is not None:
            u_ir = self.conv_in(ir)
            query, key, value = self.query(u_ir), self.key(u_rgb), self.value(u_rgb)
            attention = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(self.width),
                                      dim=-1)  # (B, C', H, H): between rows, per channel
            attended = attention @ value
            fused = attended * torch.sigmoid(self.forget(attended)) + u_rgb
        out = self.conv_out(fused)
        return rgb + out if self.residual else out
