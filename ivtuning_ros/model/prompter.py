"""The Modality-aware Prompter (paper section III-B): MP-alpha and MP-beta.

Names follow the paper: visible tokens z_vis, prompt tokens z_P, the scaled
LayerNorm with omega/phi (eqs. 2-3), down projections s1/s2 (eqs. 4-5), the
Split-Fuse Enhancer on the visible flow only (Fig. 5), a linear infrared flow,
and up projections s3/s4 with alpha-fusion (eq. 6) and beta-fusion (eq. 7).
All token tensors are channels-last: (B, H, W, C).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ScaledLayerNorm(nn.Module):
    """LN(z) * omega + phi (eqs. 2-3); the LayerNorm keeps its own affine."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.omega = nn.Parameter(torch.ones(dim))
        self.phi = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.norm(z) * self.omega + self.phi

    def folded_affine(self) -> tuple[Tensor, Tensor]:
        """(scale, shift) with forward(z) == layer_norm(z, no affine) * scale + shift."""
        scale = self.norm.weight * self.omega
        return scale, self.norm.bias * self.omega + self.phi


class SplitFuseEnhancer(nn.Module):
    """Visible-flow enhancer (Fig. 5).

    The first ``round(hidden * split_ratio)`` channels get a depthwise 3x3 conv
    with a residual; the rest pass unchanged ("retain the original features");
    then 1x1 conv -> BatchNorm -> ReLU -> 1x1 conv mixes channels, h -> h.
    """

    def __init__(self, hidden: int, split_ratio: float) -> None:
        super().__init__()
        self.split = round(hidden * split_ratio)
        self.local = (
            nn.Conv2d(self.split, self.split, 3, padding=1, groups=self.split)
            if self.split > 0
            else None
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(hidden, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
        )

    def forward(self, m_vis: Tensor) -> Tensor:
        """(B, H, W, h) -> (B, H, W, h)."""
        # A permuted channels-last tensor is a channels_last-strided NCHW map:
        # the convolutions take it without a copy.
        x = m_vis.permute(0, 3, 1, 2)
        if self.local is not None:
            selected, rest = x[:, : self.split], x[:, self.split :]
            x = torch.cat([selected + self.local(selected), rest], dim=1)
        return self.fuse(x).permute(0, 2, 3, 1)


class ModalityPrompter(nn.Module):
    """Structure shared by MP-alpha and MP-beta: eqs. 2-5 and the Split-Fuse Enhancer."""

    def __init__(self, dim: int, hidden: int, split_ratio: float) -> None:
        super().__init__()
        self.norm_vis = ScaledLayerNorm(dim)  # eq. 2
        self.norm_prompt = ScaledLayerNorm(dim)  # eq. 3
        self.s1 = nn.Linear(dim, hidden)  # eq. 4
        self.s2 = nn.Linear(dim, hidden)  # eq. 5
        self.enhancer = SplitFuseEnhancer(hidden, split_ratio)
        self.s3 = _zero_linear(hidden, dim)

    def visible_latent(self, z_vis: Tensor) -> Tensor:
        """M_vis^e = Enhancer(s1(LN1(z_vis) * omega1 + phi1)): (B, H, W, C) -> (B, H, W, h)."""
        return self.enhancer(self.s1(self.norm_vis(z_vis)))

    def prompt_latent(self, z_prompt: Tensor) -> Tensor:
        """M_P = s2(LN2(z_P) * omega2 + phi2); the infrared flow stays linear."""
        return self.s2(self.norm_prompt(z_prompt))


class PrompterAlpha(ModalityPrompter):
    """MP-alpha: fuses RGB and IR patch tokens in the latent space into P^0 (eq. 6)."""

    def forward(self, z_vis: Tensor, z_prompt: Tensor | None) -> Tensor:
        """P^0 = s3(M_vis^e + M_P); without IR (RGB-only), M_P = 0."""
        latent = self.visible_latent(z_vis)
        if z_prompt is not None:
            latent = latent + self.prompt_latent(z_prompt)
        return self.s3(latent)


class PrompterBeta(ModalityPrompter):
    """MP-beta: fuses after up-projection, P = s3(M_vis^e) + s4(M_P) (eq. 7)."""

    def __init__(self, dim: int, hidden: int, split_ratio: float) -> None:
        super().__init__(dim, hidden, split_ratio)
        self.s4 = _zero_linear(hidden, dim)

    def visible_term(self, z_vis: Tensor) -> Tensor:
        return self.s3(self.visible_latent(z_vis))

    def prompt_term(self, z_prompt: Tensor) -> Tensor:
        return self.s4(self.prompt_latent(z_prompt))

    def forward(self, z_vis: Tensor, z_prompt: Tensor) -> Tensor:
        return self.visible_term(z_vis) + self.prompt_term(z_prompt)


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """Up projection, zero-initialised so an untrained prompter leaves the backbone unchanged."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
