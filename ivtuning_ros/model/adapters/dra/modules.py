"""DRA's trainable modules on the Swin (SEED_METHODS.md section 2): the modality LoRA,
the task prompts and the task-prompted mixture of modality experts (TP-MoME)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..lora import LoRA


class ModalityLoRA(nn.Module):
    """LoRA on every block's qkv (C -> 3C) of the IR stream: ``blocks[stage][block]``.
    Learnt once without labels (stage 1), then frozen and shared by every task."""

    def __init__(self, dims: list[int], depths: list[int], rank: int, alpha: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList(LoRA(dim, 3 * dim, rank, alpha) for _ in range(depth))
            for dim, depth in zip(dims, depths, strict=True))


class BlockPrompts(nn.Module):
    """A block's task prompts: ``length`` tokens per modality, N(0, 0.02^2)."""

    def __init__(self, dim: int, length: int) -> None:
        super().__init__()
        self.rgb = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.ir = nn.Parameter(torch.randn(length, dim) * 0.02)


class MixtureOfModalityExperts(nn.Module):
    """TP-MoME at one stage (D10-D12): both streams projected to d = C/r; their joint
    projection is the anchor; a general expert and one expert per modality (fed the joint
    projection with the other modality masked) are mixed per token by a gate that reads
    the anchor plus a learnt task prompt; the mixture goes back to C through a
    zero-initialised projection added to the RGB features (identity at initialisation).
    Parameters: 3Cd + 8d^2 + 5C + 13d + 3."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        hidden = dim // ratio
        self.norm_rgb, self.norm_ir = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.proj_rgb, self.proj_ir = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.joint = nn.Linear(2 * hidden, hidden)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            for _ in range(3))  # general, RGB, IR
        self.gate = nn.Linear(hidden, 3)
        self.task_prompt = nn.Parameter(torch.zeros(hidden))
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, rgb: Tensor, ir: Tensor | None, ir_kept: Tensor | None = None) -> Tensor:
        """(B, H, W, C) stream features -> (B, H, W, C). Without ``ir``, or where ``ir_kept``
        (B,) is False, a sample's IR is masked out and its IR expert gated off."""
        if ir is None:
            present = rgb.new_zeros(rgb.shape[0], dtype=torch.bool)
        elif ir_kept is None:
            present = rgb.new_ones(rgb.shape[0], dtype=torch.bool)
        else:
            present = ir_kept
        r_rgb = self.proj_rgb(self.norm_rgb(rgb))
        r_ir = self.proj_ir(self.norm_ir(ir)) if ir is not None else torch.zeros_like(r_rgb)
        r_ir = r_ir * present.view(-1, 1, 1, 1).to(r_ir.dtype)
        w_rgb, w_ir = self.joint.weight.chunk(2, dim=1)
        x_rgb = F.linear(r_rgb, w_rgb, self.joint.bias)  # W_cat [R_rgb; 0]
        x_ir = F.linear(r_ir, w_ir, self.joint.bias)  # W_cat [0; R_ir]
        anchor = x_rgb + x_ir - self.joint.bias  # W_cat [R_rgb; R_ir]
        logits = self.gate(anchor + self.task_prompt)
        ir_logit = logits[..., 2].masked_fill(~present.view(-1, 1, 1), float("-inf"))
        weights = torch.softmax(torch.cat([logits[..., :2], ir_logit[..., None]], -1), -1)
        mixed = anchor
        for index, (expert, x) in enumerate(zip(self.experts, (anchor, x_rgb, x_ir),
                                                strict=True)):
            mixed = mixed + weights[..., index:index + 1] * expert(x)
        return rgb + self.up(mixed)
