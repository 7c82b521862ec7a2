"""DRA on the frozen Swin (SEED_METHODS.md section 2.4): an RGB stream and an IR stream
through the same frozen Swin; the IR stream carries the frozen modality LoRA on every
qkv; every block of both streams attends to its task prompts as extra keys and values;
TP-MoME fuses the stage outputs into the RGB features.

RGB only (IR dropout in the node, and modality dropout in training): the IR stream is
skipped (per sample in training) and MoME masks the IR input and gates its expert off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...backbones.swin import swin_stages, window_attention
from ...config import ModelConfig
from ..base import BackboneOutput
from ..two_stream import TwoStreamSwin, on_both
from .modules import BlockPrompts, MixtureOfModalityExperts, ModalityLoRA


class DRASwin(TwoStreamSwin):
    """Frozen torchvision Swin (``swin``) + frozen ``modality_lora`` (reusable) +
    ``prompts[stage][block]`` and ``mome[stage]`` (the task's #TP) + ``out_norms`` (neck)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        backbone, dra = config.backbone, config.dra
        self.modality_dropout = dra.modality_dropout
        dims, depths = backbone.stage_dims, backbone.depths
        self.modality_lora = ModalityLoRA(dims, depths, dra.lora_rank, dra.lora_alpha)
        self.modality_lora.requires_grad_(False)  # stage 1 trains it; tasks build on it
        self.prompts = nn.ModuleList(
            nn.ModuleList(BlockPrompts(dim, dra.prompt_length) for _ in range(depth))
            if dra.prompt_length else nn.ModuleList()
            for dim, depth in zip(dims, depths, strict=True))
        self.mome = nn.ModuleDict({str(stage): MixtureOfModalityExperts(dims[stage],
                                                                        dra.mome_ratio)
                                   for stage in dra.mome_stages})

    def adapter_parts(self) -> dict[str, nn.Module]:
        return {"prompts": self.prompts, "mome": self.mome}

    def reusable_parts(self) -> dict[str, nn.Module]:
        return {"modality_lora": self.modality_lora}

    def forward(self, rgb: Tensor, ir: Tensor | None = None) -> BackboneOutput:
        z_rgb, z_ir = self.stems(rgb, ir)
        ir_kept = None
        if self.training and ir is not None and self.modality_dropout > 0:
            ir_kept = torch.rand(rgb.shape[0], device=rgb.device) >= self.modality_dropout
        features = []
        for stage, (merge, blocks) in enumerate(swin_stages(self.swin)):
            if merge is not None:
                z_rgb, z_ir = on_both(merge, z_rgb, z_ir)
            for index, block in enumerate(blocks):
                prompts = self.prompts[stage][index] if len(self.prompts[stage]) else None
                lora = self.modality_lora.blocks[stage][index]
                a_rgb = _attention(block, z_rgb, None,
                                   prompts.rgb if prompts is not None else None)
                a_ir = (_attention(block, z_ir, lora, prompts.ir if prompts is not None else None)
                        if z_ir is not None else None)
                z_rgb, z_ir = on_both(lambda x, b=block: x + b.mlp(b.norm2(x)), a_rgb, a_ir)
            r_rgb, r_ir = on_both(self.out_norms[stage], z_rgb, z_ir)
            features.append(self._fuse(stage, r_rgb, r_ir, ir_kept).permute(0, 3, 1, 2))
        return BackboneOutput(features, ir is not None)

    def ir_stream(self, ir3: Tensor, token_mask: Tensor | None = None,
                  mask_token: Tensor | None = None, lora: ModalityLoRA | None = None) -> Tensor:
        """The IR stream without task prompts (stage 1): 3-channel IR (B, 3, H, W) ->
        last-stage tokens (B, H/32, W/32, C3). Where ``token_mask`` (B, >= H/4, >= W/4) is
        True, the stem's tokens are replaced by ``mask_token`` (SimMIM-style masking).
        ``lora``: another modality LoRA in place of the model's (the EMA teacher)."""
        lora = lora or self.modality_lora
        x = self.swin.features[0](self.pad_to_patches(ir3))
        if token_mask is not None:
            token_mask = token_mask[:, : x.shape[1], : x.shape[2], None]
            x = torch.where(token_mask, mask_token.to(x.dtype), x)
        for stage, (merge, blocks) in enumerate(swin_stages(self.swin)):
            if merge is not None:
                x = merge(x)
            for index, block in enumerate(blocks):
                x = _attention(block, x, lora.blocks[stage][index], None)
                x = x + block.mlp(block.norm2(x))
        return x

    def _fuse(self, stage: int, r_rgb: Tensor, r_ir: Tensor | None,
              ir_kept: Tensor | None) -> Tensor:
        if str(stage) in self.mome:
            return self.mome[str(stage)](r_rgb, r_ir, ir_kept)
        if r_ir is None:
            return r_rgb
        if ir_kept is not None:
            r_ir = r_ir * ir_kept.view(-1, 1, 1, 1).to(r_ir.dtype)
        return r_rgb + r_ir


def _attention(block: nn.Module, x: Tensor, lora: nn.Module | None,
               prompts: Tensor | None) -> Tensor:
    """The attention residual, with the stream's LoRA and its prompts as keys/values (the
    prompt tokens pass through the block's frozen norm1 and qkv, and the LoRA)."""
    prompt_kv = _prompt_keys_values(block, prompts, lora) if prompts is not None else None
    return x + window_attention(block.norm1(x), block.attn, qkv_delta=lora,
                                prompt_kv=prompt_kv)


def _prompt_keys_values(block: nn.Module, prompts: Tensor,
                        lora: nn.Module | None) -> tuple[Tensor, Tensor]:
    """(P, C) prompt tokens -> keys and values (1, heads, P, C/heads)."""
    attn = block.attn
    tokens = block.norm1(prompts)
    qkv = F.linear(tokens, attn.qkv.weight, attn.qkv.bias)
    if lora is not None:
        qkv = qkv + lora(tokens)
    qkv = qkv.view(1, tokens.shape[0], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    return qkv[1], qkv[2]
