"""tau_ir: the infrared patch embedding, shaped like the frozen model's RGB one."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class IRPatchEmbed(nn.Module):
    """A p x p stride-p conv to the model's width, with a LayerNorm where the RGB patch
    embedding has one (Swin) and none where it has none (the plain ViTs)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, norm: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

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


def ir_embed_to_mono(weight: Tensor) -> Tensor:
    """3-channel IR patch-embedding weight (C, 3, p, p) -> 1-channel (C, 1, p, p).

    Exact for grey IR replicated into three channels: conv(w, [g, g, g]) = conv(sum_c w_c, g).
    """
    return weight.sum(dim=1, keepdim=True)

