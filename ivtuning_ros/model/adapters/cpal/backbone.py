"""CPAL on the frozen Swin (SEED_METHODS.md section 1.3): the Swin runs on RGB and on IR
(grey replicated into its RGB stem), both streams through the same frozen weights;
cross prompts join them after every attention and MLP residual, gated perception fuses
the stage outputs, LoRA adapts the last stage's attention.

RGB only (IR dropout in the node): the IR stream is skipped, the cross prompts add nothing
to RGB, GPM fuses with V_r = 0 and stages without GPM pass the RGB features.
"""
from __future__ import annotations

from torch import Tensor, nn

from ...backbones.swin import swin_stages, window_attention
from ...config import ModelConfig
from ..base import BackboneOutput
from ..lora import QKVLoRA
from ..two_stream import TwoStreamSwin, on_both, stage_widths
from .modules import CPALLayer, GatedPerception


class CPALSwin(TwoStreamSwin):
    """Frozen torchvision Swin (``swin``) + ``mcp[stage][block]``, ``gpm[stage]``,
    ``lora[modality][stage][block]`` (CPAL's #TP) and ``out_norms`` (neck, shared by both
    streams)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        backbone, cpal = config.backbone, config.cpal
        self.order, self.direction = cpal.mcp_order, cpal.mcp_direction
        dims, depths = backbone.stage_dims, backbone.depths
        self.mcp = nn.ModuleList(
            nn.ModuleList(CPALLayer(dim, cpal.mcp_hidden, cpal.mcp_groups, cpal.mcp_dropout,
                                    cpal.mcp_share_directions) for _ in range(depth))
            if stage in cpal.mcp_stages else nn.ModuleList()
            for stage, (dim, depth) in enumerate(zip(dims, depths, strict=True)))
        widths = stage_widths(config.input.width, backbone.patch_size)
        self.gpm = nn.ModuleDict({
            str(stage): GatedPerception(dims[stage], widths[stage], cpal.gpm_reduction,
                                        cpal.gpm_residual) for stage in cpal.gpm_stages})
        modalities = ("rgb", "ir") if cpal.lora_per_modality else ("shared",)
        self.lora = nn.ModuleDict({modality: nn.ModuleList(
            nn.ModuleList(QKVLoRA(dim, cpal.lora_targets, cpal.lora_rank, cpal.lora_alpha)
                          for _ in range(depth))
            if stage in cpal.lora_stages else nn.ModuleList()
            for stage, (dim, depth) in enumerate(zip(dims, depths, strict=True)))
            for modality in modalities})

    def adapter_parts(self) -> dict[str, nn.Module]:
        return {"mcp": self.mcp, "gpm": self.gpm, "lora": self.lora}

    def forward(self, rgb: Tensor, ir: Tensor | None = None) -> BackboneOutput:
        z_rgb, z_ir = self.stems(rgb, ir)
        features = []
        for stage, (merge, blocks) in enumerate(swin_stages(self.swin)):
            if merge is not None:
                z_rgb, z_ir = on_both(merge, z_rgb, z_ir)
            for index, block in enumerate(blocks):
                z_rgb, z_ir = self._block(block, stage, index, z_rgb, z_ir)
            out_norm = self.out_norms[stage]
            f_rgb, f_ir = on_both(lambda x, norm=out_norm: norm(x).permute(0, 3, 1, 2),
                                  z_rgb, z_ir)
            features.append(self._fuse(stage, f_rgb, f_ir))
        return BackboneOutput(features, ir is not None)

    def _block(self, block: nn.Module, stage: int, index: int, z_rgb: Tensor,
               z_ir: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One Swin block on both streams with the cross prompts of eqs. 7-12."""
        a_rgb, a_ir = self._attention(block, stage, index, z_rgb, z_ir)
        layer = self.mcp[stage][index] if len(self.mcp[stage]) else None

        def mlp(x: Tensor) -> Tensor:
            return x + block.mlp(block.norm2(x))

        if z_ir is None or layer is None:
            return on_both(mlp, a_rgb, a_ir)
        to_ir = self.direction in ("both", "rgb_to_ir")
        to_rgb = self.direction in ("both", "ir_to_rgb")
        first, second = layer.after_attention, layer.after_mlp
        if self.order == "parallel":
            t_ir = a_ir + first.prompt(z_rgb, "ir") if to_ir else a_ir  # eqs. 7, 9
            t_rgb = a_rgb + first.prompt(z_ir, "rgb") if to_rgb else a_rgb  # eq. 8
            b_rgb, b_ir = on_both(mlp, t_rgb, t_ir)
            out_ir = b_ir + second.prompt(t_rgb, "ir") if to_ir else b_ir  # eqs. 10, 12
            out_rgb = b_rgb + second.prompt(t_ir, "rgb") if to_rgb else b_rgb  # eq. 11
            return out_rgb, out_ir
        # The public code: RGB first; IR's prompts come from the updated RGB tokens.
        t_rgb = a_rgb + first.prompt(z_ir, "rgb") if to_rgb else a_rgb
        t_ir = a_ir + first.prompt(t_rgb, "ir") if to_ir else a_ir
        b_rgb = mlp(t_rgb)
        out_rgb = b_rgb + second.prompt(t_ir, "rgb") if to_rgb else b_rgb
        b_ir = mlp(t_ir)
        out_ir = b_ir + second.prompt(out_rgb, "ir") if to_ir else b_ir
        return out_rgb, out_ir

    def _attention(self, block: nn.Module, stage: int, index: int, z_rgb: Tensor,
                   z_ir: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The attention residual of both streams, each with its LoRA (last stage)."""
        def attention(x: Tensor, lora: nn.Module | None) -> Tensor:
            return x + window_attention(block.norm1(x), block.attn, qkv_delta=lora)

        loras = {name: stages[stage] for name, stages in self.lora.items()}
        if "shared" in loras or not len(loras["rgb"]):
            lora = next(iter(loras.values()))
            lora = lora[index] if len(lora) else None
            return on_both(lambda x: attention(x, lora), z_rgb, z_ir)
        a_rgb = attention(z_rgb, loras["rgb"][index])
        a_ir = attention(z_ir, loras["ir"][index]) if z_ir is not None else None
        return a_rgb, a_ir

    def _fuse(self, stage: int, f_rgb: Tensor, f_ir: Tensor | None) -> Tensor:
        if str(stage) in self.gpm:
            return self.gpm[str(stage)](f_rgb, f_ir)
        return f_rgb if f_ir is None else f_rgb + f_ir
