"""The operator's fused image: M2PN on the registered IR and the RGB frame's luminance,
the visible colour restored, at the RGB frame's size (no ROS)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.image_fusion.checkpoint import load_fusion
from ..model.image_fusion.color import luminance, restore_color


class FusionRunner:
    """``fuse(rgb, registered_ir)``: uint8 (H, W, 3) RGB and uint8 (H, W) IR already in RGB
    geometry (the engine's `register_ir`) -> uint8 (H, W, 3). M2PN runs at ``width``
    pixels wide (the frame's aspect kept) and its output is resized back."""

    def __init__(self, checkpoint: str | Path, width: int = 320, device: str = "cpu") -> None:
        self.model = load_fusion(checkpoint).to(device)
        self.width = width
        self.device = torch.device(device)

    @torch.inference_mode()
    def fuse(self, rgb: np.ndarray, registered_ir: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        size = (max(8, round(height * self.width / width)), self.width)
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        rgb_t = rgb_t.permute(2, 0, 1)[None].float() / 255
        ir_t = torch.from_numpy(np.ascontiguousarray(registered_ir)).to(self.device)
        ir_t = ir_t[None, None].float() / 255
        small_rgb = F.interpolate(rgb_t, size=size, mode="bilinear", align_corners=False,
                                  antialias=True)
        small_ir = F.interpolate(ir_t, size=size, mode="bilinear", align_corners=False,
                                 antialias=True)
        fused = self.model(small_ir, luminance(small_rgb)).fused.clamp(0, 1)
        fused = F.interpolate(fused, size=(height, width), mode="bilinear", align_corners=False)
        colour = restore_color(fused, rgb_t)[0]
        return (colour * 255).round().byte().permute(1, 2, 0).cpu().numpy()
