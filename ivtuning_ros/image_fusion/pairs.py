"""Registered RGB-IR pairs in [0, 1] at the visible image's own resolution: what image
fusion is trained on and measured at (the engine's letterbox is for the detector).

IR goes through the engine's own steps: `ir_to_unit` (mono8 / 255, 16-bit gain control
from the model config) and registration onto the visible image (the sample's homography,
else the node's default ``registration: scale``)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.sample import Sample
from ..model.config import InputConfig
from ..runtime.preprocess import ir_to_unit
from ..runtime.registration import scaling_homography, warp_ir_to_rgb


def unit_pair(sample: Sample, config: InputConfig,
              width: int | None = None) -> tuple[Tensor, Tensor]:
    """(rgb (1, 3, H, W), ir (1, 1, H, W)) in [0, 1], IR registered onto the visible image;
    ``width``: both resized to that width first (aspect ratio kept), else native."""
    rgb = torch.from_numpy(np.ascontiguousarray(sample.rgb)).permute(2, 0, 1)[None].float() / 255
    height, rgb_width = sample.rgb.shape[:2]
    ir = torch.from_numpy(np.ascontiguousarray(sample.ir))
    homography = (sample.homography if sample.homography is not None
                  else scaling_homography(*sample.ir.shape, height, rgb_width))
    ir = warp_ir_to_rgb(ir_to_unit(ir, config), homography, (height, rgb_width))[None, None]
    if width is not None and width != rgb_width:
        size = (max(1, round(height * width / rgb_width)), width)
        rgb, ir = (F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                 antialias=True) for x in (rgb, ir))
    return rgb.clamp(0, 1), ir.clamp(0, 1)


def held_out_indices(length: int, count: int, seed: int) -> list[int]:
    """``count`` pair indices of ``length`` drawn with ``seed``, sorted: the validation pairs
    that `ivtuning train-fusion --val-pairs` holds out and `ivtuning eval --fusion
    --val-pairs` measures on (the same data set, count and seed give the same pairs)."""
    if not 0 < count < length:
        raise ValueError(f"cannot hold out {count} of {length} pairs: use 0 < --val-pairs < "
                         f"{length}")
    return sorted(np.random.default_rng(seed).permutation(length)[:count].tolist())
