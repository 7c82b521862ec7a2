"""The frozen Swin Transformer: torchvision's modules, with the detection-backbone shift rule.

torchvision's `SwinTransformer` supplies every weight-carrying module (patch
embedding, blocks, PatchMerging). Two things differ from its classification
forward, and both live here:

* window attention keeps a block's shift even when one window covers the whole
  (padded) map, as mmdet's detection backbone does; torchvision drops the shift
  there. Checkpoints converted from mmdet only reproduce with mmdet's rule.
* attention runs through `scaled_dot_product_attention` with the relative
  position bias and shift mask folded into one additive mask, windows folded into
  the batch (fused kernels on CPU and GPU), and the shift mask is cached per map
  size instead of rebuilt per call.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, SwinTransformer

from ..config import BackboneConfig


def build_swin(config: BackboneConfig) -> SwinTransformer:
    """A torchvision Swin with random weights, frozen, without its classifier.

    State-dict keys are torchvision's (``features.*``), so torchvision-layout
    checkpoints load directly.
    """
    swin = SwinTransformer(
        patch_size=[config.patch_size, config.patch_size],
        embed_dim=config.embed_dim,
        depths=config.depths,
        num_heads=config.num_heads,
        window_size=[config.window_size, config.window_size],
        mlp_ratio=config.mlp_ratio,
        stochastic_depth_prob=0.0,
    )
    # A detection backbone has per-stage output norms instead of the classifier's.
    swin.norm = nn.Identity()
    swin.head = nn.Identity()
    swin.requires_grad_(False)
    return swin.eval()


@lru_cache(maxsize=64)
def _shift_mask(
    pad_h: int, pad_w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> Tensor:
    """Additive mask (num_windows, N, N) that stops attention across shifted-window seams."""
    region = torch.zeros(pad_h, pad_w, device=device)
    h_slices = (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None))
    w_slices = (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None))
    for i, hs in enumerate(h_slices):
        for j, ws in enumerate(w_slices):
            region[hs, ws] = 3 * i + j
    region = region.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    region = region.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros_like(different, dtype=torch.float32).masked_fill(different, -100.0)


def window_attention(x: Tensor, attn: ShiftedWindowAttention,
                     qkv_delta: Callable[[Tensor], Tensor] | None = None,
                     prompt_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(Shifted) window multi-head self-attention of one Swin block.

    Args:
        x: tokens (B, H, W, C), any H and W (padded to whole windows inside).
        attn: the block's torchvision attention module (weights and sizes).
        qkv_delta: adds to the frozen qkv projection, tokens (..., C) -> (..., 3C): a LoRA.
        prompt_kv: extra keys and values (B or 1, heads, P, C/heads) every window attends
            to (prompt tokens); queries stay the image's, so the output shape is unchanged.
    Returns:
        (B, H, W, C).
    """
    batch, height, width, channels = x.shape
    wh, ww = attn.window_size
    heads = attn.num_heads
    x = F.pad(x, (0, 0, 0, (ww - width % ww) % ww, 0, (wh - height % wh) % wh))
    pad_h, pad_w = x.shape[1:3]
    shift = tuple(attn.shift_size)
    shifted = sum(shift) > 0
    if shifted:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))

    rows, cols = pad_h // wh, pad_w // ww
    windows = x.view(batch, rows, wh, cols, ww, channels).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(batch, rows * cols, wh * ww, channels)
    qkv = F.linear(windows, attn.qkv.weight, attn.qkv.bias)
    if qkv_delta is not None:
        qkv = qkv + qkv_delta(windows)
    qkv = qkv.view(batch, rows * cols, wh * ww, 3, heads, channels // heads)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, d)

    mask = attn.get_relative_position_bias()[0]  # (heads, N, N)
    if shifted:
        seams = _shift_mask(pad_h, pad_w, (wh, ww), shift, x.device)
        mask = mask + seams[:, None]  # (nW, heads, N, N)
    if prompt_kv is not None:
        k, v, mask = _with_prompts(k, v, mask, *prompt_kv)
    # Windows folded into the batch: with 4-D inputs and mask the CPU runs its fused
    # attention kernel (2.2-3.5x faster per call than the math path it takes for 5-D
    # inputs). A mask without a window axis stays a broadcast view.
    q, k, v = (t.flatten(0, 1) for t in (q, k, v))
    mask = mask.expand(batch, rows * cols, *mask.shape[-3:]).flatten(0, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
    out = out.transpose(1, 2).reshape(batch, rows * cols, wh * ww, channels)
    out = F.linear(out, attn.proj.weight, attn.proj.bias)

    out = out.view(batch, rows, cols, wh, ww, channels).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(batch, pad_h, pad_w, channels)
    if shifted:
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out[:, :height, :width, :]


def _with_prompts(k: Tensor, v: Tensor, mask: Tensor, prompt_k: Tensor,
                  prompt_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keys and values of every window extended by the prompts'; the mask gets zero columns
    for them (no position bias, no shift seam: a prompt is no place in the window)."""
    batch, windows = k.shape[:2]
    extend = (batch, windows, *prompt_k.shape[1:])
    k = torch.cat([k, prompt_k[:, None].expand(extend)], dim=3)
    v = torch.cat([v, prompt_v[:, None].expand(extend)], dim=3)
    return k, v, F.pad(mask, (0, prompt_k.shape[2]))


def swin_stages(swin: SwinTransformer) -> list[tuple[nn.Module | None, nn.Sequential]]:
    """(PatchMerging entering the stage or None for stage 0, the stage's blocks) per stage."""
    features = list(swin.features)
    stages = []
    for index in range(1, len(features), 2):
        merge = features[index - 1] if index > 1 else None
        stages.append((merge, features[index]))
    return stages


def frozen_features(swin: SwinTransformer, out_norms: nn.ModuleList,
                    rgb: Tensor) -> list[Tensor]:
    """The frozen Swin alone on RGB (whole patches) through the adapter's output norms: the
    visible-only baseline every Swin adapter's ``forward_frozen`` returns."""
    x = swin.features[0](rgb)
    features = []
    for (merge, blocks), out_norm in zip(swin_stages(swin), out_norms, strict=True):
        if merge is not None:
            x = merge(x)
        for block in blocks:
            x = x + window_attention(block.norm1(x), block.attn)
            x = x + block.mlp(block.norm2(x))
        features.append(out_norm(x).permute(0, 3, 1, 2))
    return features
