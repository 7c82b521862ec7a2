"""The Modality-aware Prompter (paper section III-B): MP-alpha and MP-beta.

Names follow the paper: visible tokens z_vis, prompt tokens z_P, the scaled
LayerNorm with omega/phi (eqs. 2-3), down projections s1/s2 (eqs. 4-5), the
Split-Fuse Enhancer on the visible flow only (Fig. 5), a linear infrared flow,
and up projections s3/s4 with alpha-fusion (eq. 6) and beta-fusion (eq. 7).
All token tensors are channels-last: (B, H, W, C).

Two paths compute the same function. The module path (training, whenever gradients
are recorded, and MP-alpha, which runs once per image) runs the modules' own weights,
the 1x1 convs as linear layers on the tokens. MP-beta's eval path (eval mode, no
gradients) runs weights derived from them by exact identities -- BatchNorm folded into
the 1x1 conv before it, the enhancer's residual into the depthwise conv's centre tap,
s3 composed with the last 1x1 conv, the infrared term added inside the up projection's
matmul -- cached until a weight changes or ``train()`` is called. The state dict is the
same for both; test/test_prompter.py proves each identity.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ScaledLayerNorm(nn.Module):
    """LN(z) * omega + phi (eqs. 2-3); the LayerNorm keeps its own affine."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.omega = nn.Parameter(torch.ones(dim))
        self.phi = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        """(..., C) -> (..., C), as one layer norm with the affine of `folded_affine`."""
        scale, shift = self.folded_affine()
        return F.layer_norm(z, self.norm.normalized_shape, scale, shift, self.norm.eps)

    def folded_affine(self) -> tuple[Tensor, Tensor]:
        """(scale, shift) with forward(z) == layer_norm(z, no affine) * scale + shift.

        (LN0(z) * w + b) * omega + phi == LN0(z) * (w * omega) + (b * omega + phi).
        """
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
        """(B, H, W, h) -> (B, H, W, h); the 1x1 convs act on the tokens as linear layers."""
        conv1, batch_norm, relu, conv2 = self.fuse
        hidden = F.linear(self._split_local(m_vis), _pointwise(conv1), conv1.bias)
        # BatchNorm2d reads the permuted tokens as a channels_last map: no copy either way.
        hidden = relu(batch_norm(hidden.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return F.linear(hidden, _pointwise(conv2), conv2.bias)

    def _split_local(self, m_vis: Tensor) -> Tensor:
        """(B, H, W, h): the split channels plus their depthwise 3x3, the rest unchanged."""
        if self.local is None:
            return m_vis
        selected = m_vis[..., : self.split]
        # A permuted channels-last slice is a channels_last-strided NCHW map for the conv.
        local = self.local(selected.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return torch.cat([selected + local, m_vis[..., self.split :]], dim=-1)

    def eval_weights(self) -> EnhancerWeights:
        """The eval path's weights (`enhance_folded`); the caller folds the last 1x1 conv."""
        conv1, batch_norm, _, _ = self.fuse
        local_weight, local_bias = (residual_into_centre_tap(self.local)
                                    if self.local is not None else (None, None))
        mix_weight, mix_bias = batch_norm_into_linear(_pointwise(conv1), conv1.bias, batch_norm)
        return EnhancerWeights(local_weight, local_bias, mix_weight, mix_bias)


class EnhancerWeights(NamedTuple):
    """The enhancer's eval-time weights: depthwise 3x3 (None without split channels) with
    the residual in its centre tap, and the first 1x1 conv (h, h) with BatchNorm folded in."""

    local_weight: Tensor | None
    local_bias: Tensor | None
    mix_weight: Tensor
    mix_bias: Tensor


def enhance_folded(m_vis: Tensor, weights: EnhancerWeights) -> Tensor:
    """Eval path of the enhancer up to its ReLU: (B, H, W, h) -> (B, H, W, h).

    Overwrites ``m_vis``'s split channels in place (the caller's fresh s1 output), so
    there is no ``cat``: the rest channels pass through untouched, as Fig. 5 wants.
    """
    if weights.local_weight is not None:
        split = weights.local_weight.shape[0]
        selected = m_vis[..., :split].permute(0, 3, 1, 2)
        local = F.conv2d(selected, weights.local_weight, weights.local_bias, padding=1,
                         groups=split)
        m_vis[..., :split] = local.permute(0, 2, 3, 1)
    return F.linear(m_vis, weights.mix_weight, weights.mix_bias).relu_()


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


class BetaEvalWeights(NamedTuple):
    """MP-beta's eval-time weights: the enhancer's, s3 composed with the enhancer's last
    1x1 conv (C, h), and the bias of P: s4's plus that composition's (C,)."""

    enhancer: EnhancerWeights
    up_weight: Tensor
    prompt_bias: Tensor


class PrompterBeta(ModalityPrompter):
    """MP-beta: fuses after up-projection, P = s3(M_vis^e) + s4(M_P) (eq. 7).

    A layer calls it twice on the same prompt input P^{l-1}: `bind_prompt` computes the
    infrared term once and returns P as a function of the visible tokens.
    """

    def __init__(self, dim: int, hidden: int, split_ratio: float) -> None:
        super().__init__(dim, hidden, split_ratio)
        self.s4 = _zero_linear(hidden, dim)
        self._cache: tuple[tuple, BetaEvalWeights] | None = None

    def forward(self, z_vis: Tensor, z_prompt: Tensor) -> Tensor:
        """P: (B, H, W, C) visible tokens, (B, H, W, C) prompt tokens -> (B, H, W, C)."""
        return self.bind_prompt(z_prompt)(z_vis)

    def bind_prompt(self, z_prompt: Tensor) -> Callable[[Tensor], Tensor]:
        """z_vis (B, H, W, C) -> P (B, H, W, C) for a fixed prompt input z_P (B, H, W, C).

        s4(M_P) is computed here, once. On the eval path it carries the whole bias of P,
        and each call adds it inside the up projection's matmul (one addmm).
        """
        latent = self.prompt_latent(z_prompt)
        if not self.uses_eval_path():
            infrared = self.s4(latent)
            return lambda z_vis: self.s3(self.visible_latent(z_vis)) + infrared
        weights = self._eval_weights()
        infrared = F.linear(latent, self.s4.weight, weights.prompt_bias)

        def prompt(z_vis: Tensor) -> Tensor:
            hidden = enhance_folded(self.s1(self.norm_vis(z_vis)), weights.enhancer)
            return _matmul_plus(hidden, weights.up_weight, infrared)

        return prompt

    def uses_eval_path(self) -> bool:
        """Eval mode without gradients: the cached weights carry no autograd history."""
        return not self.training and not torch.is_grad_enabled()

    def train(self, mode: bool = True) -> PrompterBeta:
        """Switch mode and drop the eval weights: BatchNorm's running statistics change in
        training without bumping their version."""
        self._cache = None
        return super().train(mode)

    def _eval_weights(self) -> BetaEvalWeights:
        """Derived once and reused while every weight keeps its storage and version."""
        key = _values_key(self)
        if key is None:
            return self._derive_eval_weights()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._derive_eval_weights())
        return self._cache[1]

    def _derive_eval_weights(self) -> BetaEvalWeights:
        """Outside autocast, so that the folds keep the weights' precision."""
        conv2 = self.enhancer.fuse[3]
        with torch.autocast(self.s3.weight.device.type, enabled=False):
            up_weight, up_bias = compose_linear(self.s3.weight, self.s3.bias,
                                                _pointwise(conv2), conv2.bias)
            return BetaEvalWeights(self.enhancer.eval_weights(), up_weight,
                                   self.s4.bias + up_bias)


def batch_norm_into_linear(weight: Tensor, bias: Tensor,
                           batch_norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(weight', bias') with BN_eval(x @ W^T + b) == x @ W'^T + b' (weight: (out, in)).

    BN_eval(y) = (y - mean) * g + beta with g = gamma / sqrt(var + eps), per output
    channel, so W' = g[:, None] * W and b' = (b - mean) * g + beta.
    """
    gain = batch_norm.weight * torch.rsqrt(batch_norm.running_var + batch_norm.eps)
    return weight * gain[:, None], (bias - batch_norm.running_mean) * gain + batch_norm.bias


def residual_into_centre_tap(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """(weight', bias) with a + conv(a) == conv'(a) for a depthwise 3x3 conv, padding 1.

    Each output pixel reads its own input pixel through the centre tap, so adding 1
    there adds the residual.
    """
    weight = conv.weight.clone()
    weight[:, :, 1, 1] += 1
    return weight, conv.bias


def compose_linear(outer_weight: Tensor, outer_bias: Tensor, inner_weight: Tensor,
                   inner_bias: Tensor) -> tuple[Tensor, Tensor]:
    """outer(inner(x)) == x @ (Wo Wi)^T + (Wo bi + bo): two linear maps are one."""
    return outer_weight @ inner_weight, outer_weight @ inner_bias + outer_bias


def _matmul_plus(x: Tensor, weight: Tensor, addend: Tensor) -> Tensor:
    """x @ W^T + addend as one addmm, the GEMM accumulating onto (a copy of) the addend
    instead of a separate add: x (..., in), weight (out, in), addend (..., out) -> (..., out)."""
    flat = torch.addmm(addend.reshape(-1, weight.shape[0]), x.reshape(-1, weight.shape[1]),
                       weight.t())
    return flat.view(addend.shape)


def _pointwise(conv: nn.Conv2d) -> Tensor:
    """A 1x1 conv's weight (out, in, 1, 1) as the (out, in) matrix of a linear layer."""
    return conv.weight.flatten(1)


def _values_key(module: nn.Module) -> tuple | None:
    """Identifies the values of a module's tensors: each one's storage and in-place version
    (bumped by optimiser steps, ``load_state_dict`` and other in-place writes). None where
    there is nothing stable to compare: while traced or compiled, or for inference tensors
    (which keep no version)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    try:
        # The modules' own dicts: parameters() and buffers() take twice as long per call.
        return tuple((tensor.data_ptr(), tensor._version) for child in module.modules()
                     for tensor in (*child._parameters.values(), *child._buffers.values())
                     if tensor is not None)
    except RuntimeError:  # "Inference tensors do not track version counter"
        return None


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """Up projection, zero-initialised so an untrained prompter leaves the backbone unchanged."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
