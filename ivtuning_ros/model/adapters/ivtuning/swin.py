"""The IV-tuning backbone: a frozen Swin that receives infrared prompts (paper Fig. 4, eq. 1).

RGB patch tokens plus the MP-alpha prompt P^0 enter the frozen Swin. In every
block (layer l) that carries an MP-beta, the same MP-beta (shared weights) runs
after the attention residual and after the FFN residual, both times on the
previous layer's prompt P^{l-1}; the second call's output is P^l, the prompt of
layer l+1 (the prompt stream cascades: Fig. 4, the text after eq. 1, sec. III-B):

    x = x + Attn(LN(x));  x = x + MP-beta(x, P^{l-1})
    x = x + FFN(LN(x));   P^l = MP-beta(x, P^{l-1});  x = x + P^l

At a stage boundary the prompt passes through the frozen PatchMerging with the
tokens. Both calls of a layer read the same P^{l-1}, so the infrared term
s4(M_P) is computed once per layer (`PrompterBeta.bind_prompt`); without autograd
the prompt residuals are added in place. The result equals the literal formulation
within fp32 rounding, in eval and train mode (test/test_backbone.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import BackboneConfig, ModelConfig, PrompterConfig
from .prompter import PrompterAlpha, PrompterBeta
from .swin import build_swin, swin_stages, window_attention
from .weights import load_swin_checkpoint


class BackboneOutput(NamedTuple):
    """features: four maps (B, C_s, H/4/2^s, W/4/2^s); ir_used: False in RGB-only mode."""

    features: list[Tensor]
    ir_used: bool


class IRPatchEmbed(nn.Module):
    """tau_ir: the infrared patch embedding, shaped like the RGB one (conv + LN)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ir: Tensor) -> Tensor:
        """(B, in_channels, H, W), H and W whole patches -> tokens (B, H/p, W/p, C)."""
        return self.norm(patch_linear(ir, self.proj))


def patch_linear(image: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(image) as channels-last tokens, for a p x p conv with stride p and no padding.

    Such a conv is a linear map of each non-overlapping patch (flattened in the weight's
    (in, p, p) order): (B, in, H, W) -> (B, H/p, W/p, out), H and W multiples of p. The
    tokens come out contiguous, where the conv's NCHW output would cost the LayerNorm
    after it a transposing copy.
    """
    batch, channels, height, width = image.shape
    p = conv.kernel_size[0]
    patches = image.reshape(batch, channels, height // p, p, width // p, p)
    patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, height // p, width // p, -1)
    return F.linear(patches, conv.weight.flatten(1), conv.bias)


class IVTuningBackbone(nn.Module):
    """Frozen torchvision Swin + trainable IR embedding and Modality-aware Prompter.

    Submodules: ``swin`` (frozen, torchvision layout), ``ir_patch_embed``,
    ``mp_alpha``, ``mp_beta[stage][block]`` (the paper's #TP), and
    ``out_norms`` (per-stage LayerNorms on the outputs; they belong to the
    task neck and are trained with the heads, not counted in #TP).
    """

    def __init__(self, config: BackboneConfig, prompter: PrompterConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.ir_in_channels = prompter.ir_in_channels
        self.swin = build_swin(config)
        dims = config.stage_dims
        self.ir_patch_embed = IRPatchEmbed(prompter.ir_in_channels, dims[0], config.patch_size)
        self.mp_alpha = PrompterAlpha(dims[0], prompter.alpha_hidden, prompter.split_ratio)
        remaining = sum(config.depths) if prompter.beta_blocks is None else prompter.beta_blocks
        self.mp_beta = nn.ModuleList()
        for dim, depth in zip(dims, config.depths, strict=True):
            count = max(0, min(depth, remaining))
            remaining -= count
            self.mp_beta.append(nn.ModuleList(
                PrompterBeta(dim, prompter.beta_hidden, prompter.split_ratio)
                for _ in range(count)
            ))
        self.out_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in dims)
        # Recompute each block's activations in the backward pass instead of storing them:
        # trades compute for the memory that training Swin-L at full size needs.
        self.gradient_checkpointing = False

    def train(self, mode: bool = True) -> IVTuningBackbone:
        """Train the prompter; the frozen Swin always stays in eval mode."""
        super().train(mode)
        self.swin.eval()
        return self

    def forward(self, rgb: Tensor, ir: Tensor | None = None) -> BackboneOutput:
        """Four stage feature maps from an RGB image and an optional registered IR image.

        Args:
            rgb: normalised RGB (B, 3, H, W), any H and W.
            ir: normalised IR (B, ir_in_channels, H, W) in RGB geometry, or None
                when the IR camera is missing: M_P = 0 in MP-alpha, so the same weights
                run on RGB alone. (This is not the paper's "VIS-only" variant, Table
                VIII (c), which is a separately trained model.)
        """
        self._check_inputs(rgb, ir)
        rgb = self._pad_to_patches(rgb)
        z_vis = self.swin.features[0](rgb)
        z_ir = self.ir_patch_embed(self._pad_to_patches(ir)) if ir is not None else None
        prompt = self.mp_alpha(z_vis, z_ir)  # P^0, eq. 6
        return BackboneOutput(self._stages(_add_prompt(z_vis, prompt), prompt),  # eq. 1
                              ir is not None)

    def forward_frozen(self, rgb: Tensor) -> list[Tensor]:
        """The frozen Swin alone, without prompts: the visible-only baseline of benchmarks."""
        self._check_inputs(rgb, None)
        return self._stages(self.swin.features[0](self._pad_to_patches(rgb)), None)

    def _stages(self, x: Tensor, prompt: Tensor | None) -> list[Tensor]:
        """Run the four stages; MP-beta blocks only when a prompt stream is given."""
        features = []
        for (merge, blocks), stage_betas, out_norm in zip(
            swin_stages(self.swin), self.mp_beta, self.out_norms, strict=True
        ):
            betas = list(stage_betas) if prompt is not None else []
            if merge is not None:
                x = merge(x)
                prompt = merge(prompt) if betas else None
            for index, block in enumerate(blocks):
                beta = betas[index] if index < len(betas) else None
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    x, prompt = checkpoint(_prompted_block, block, x, beta, prompt,
                                           use_reentrant=False)
                else:
                    x, prompt = _prompted_block(block, x, beta, prompt)
            features.append(out_norm(x).permute(0, 3, 1, 2))
        return features

    def _check_inputs(self, rgb: Tensor, ir: Tensor | None) -> None:
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

    def _pad_to_patches(self, image: Tensor) -> Tensor:
        """Pad right/bottom to whole patches, as detection backbones do."""
        p = self.patch_size
        return F.pad(image, (0, -image.shape[3] % p, 0, -image.shape[2] % p))


def _prompted_block(block: nn.Module, x: Tensor, beta: PrompterBeta | None,
                    prompt: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One Swin block (torchvision modules, re-composed) with MP-beta after each residual.

    Returns the block's tokens and the prompt it hands to the next layer: P^l, the
    second MP-beta call's output (``prompt`` unchanged by a block without MP-beta).
    """
    x = x + window_attention(block.norm1(x), block.attn)
    if beta is None:
        return x + block.mlp(block.norm2(x)), prompt
    beta_of = beta.bind_prompt(prompt)  # both calls read P^{l-1}: its IR term once
    x = _add_prompt(x, beta_of(x))
    x = x + block.mlp(block.norm2(x))
    prompt = beta_of(x)  # P^l (eq. 7)
    return _add_prompt(x, prompt), prompt


def _add_prompt(x: Tensor, prompt: Tensor) -> Tensor:
    """x + prompt, both (B, H, W, C), for an ``x`` the caller computed itself.

    Without autograd, x's own storage takes the sum: on CPU a fresh tensor of this
    size costs more in first-touch page faults than the addition. With autograd the
    sum is a new tensor, because the prompter's LayerNorm saved x for its backward.
    """
    return x + prompt if torch.is_grad_enabled() else x.add_(prompt)


def build_backbone(config: ModelConfig | BackboneConfig, prompter: PrompterConfig | None = None,
                   *, load_weights: bool = True) -> IVTuningBackbone:
    """Build the IV-tuning backbone and load ``backbone.weights`` if the config names any.

    Accepts a whole `ModelConfig`, or a `BackboneConfig` with a `PrompterConfig`.
    """
    if isinstance(config, ModelConfig):
        config, prompter = config.backbone, config.prompter
    backbone = IVTuningBackbone(config, prompter or PrompterConfig())
    if load_weights and config.weights:
        load_swin_checkpoint(backbone, config.weights)
    return backbone
