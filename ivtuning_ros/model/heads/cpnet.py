"""CPNet-style progressive decoder for salient object detection (SOD) on the four stage maps.

The IV-tuning paper uses CPNet (Hu et al., IJCV 2024, "Cross-modal fusion and progressive
decoding network for RGB-D salient object detection") as its SOD decoder (section IV-A,
Table I). CPNet's paper is not in this project's seeds; its structure is read from the
authors' public description and code (github.com/hu-xh/CPNet: README, models/CPNet.py,
CPNet_train.py). What that source shows and this module follows:

* **Cross-level aggregation** per stage s: the deeper stage s+1 is reduced to stage s's
  width by conv3x3-BN-GELU, upsampled to stage s's size, concatenated with stage s and
  merged by another conv3x3-BN-GELU to the decoder width ``channels[s]``.
* **Attention fusion** per stage: coordinate attention (height- and width-pooled context,
  1x1 conv to max(8, C/32), BN, hard-swish, two 1x1 convs + sigmoid) followed by a spatial
  gate (sigmoid of a 7x7 conv over the channel maximum of the coordinate-attended map)
  applied to the stage's map, then a 1x1 conv.
* **Progressive decoder**: from the deepest stage up, conv3x3-BN-GELU then 2x bilinear
  upsampling, concatenated with the next shallower fused map; a ConvNeXt block (7x7
  depthwise conv, LayerNorm, 4x MLP with GELU, layer scale 1e-6, residual) after the
  1/8, 1/4 and 1/2 maps; the prediction layer (conv3x3-BN-GELU to a quarter width, 2x up,
  conv3x3 to one channel).
* **Deep supervision**: three side outputs (a 3x3 conv to one channel) on the 1/16, 1/8
  and 1/4 decoder maps, upsampled to the input; each of the four maps trains with BCE +
  IoU (`train/sod_loss.py`) and inference sums the four logits (CPNet's test script).

Departures, each this project's reading:

* **One stream, not two.** CPNet fuses two Swin streams (RGB, depth) in its attention
  module (concatenate both, attend, halve by the 1x1 conv). Under IV-tuning the backbone
  already fuses RGB and IR into one stream, so the module attends to that one map and the
  1x1 conv keeps its width.
* **Widths follow the backbone.** CPNet's code hard-codes Swin-B's widths (128..1024) and a
  384-pixel input (``size=96/48/24``, ``size=384``). Here the reductions map to the
  backbone's own stage widths, the decoder widths are ``sod.channels`` (CPNet's by default)
  and every resize goes to the actual map sizes, so any input size works (odd ones too).
* **The deepest stage** enters as itself: CPNet concatenates it with a copy of itself
  before its conv, which is the same function class as one conv on the map alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# CPNet's attention squeezes to max(8, C / 32) channels and gates with a 7x7 spatial conv.
ATTENTION_REDUCTION = 32
ATTENTION_MIN_WIDTH = 8
SPATIAL_KERNEL = 7
LAYER_SCALE_INIT = 1e-6


def conv_bn_gelu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias: BN shifts), BatchNorm, GELU: CPNet's basic unit."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.GELU())


class AttentionFusion(nn.Module):
    """CPNet's coordinate + spatial attention on one (B, C, H, W) map -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(ATTENTION_MIN_WIDTH, channels // ATTENTION_REDUCTION)
        self.squeeze = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden),
                                     nn.Hardswish())
        self.gate_h = nn.Conv2d(hidden, channels, 1)
        self.gate_w = nn.Conv2d(hidden, channels, 1)
        self.spatial = nn.Conv2d(1, 1, SPATIAL_KERNEL, padding=SPATIAL_KERNEL // 2, bias=False)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        height = x.shape[-2]
        # Pool along each axis, squeeze both strips together, split them back.
        strips = torch.cat([x.mean(dim=3, keepdim=True),
                            x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
        context = self.squeeze(strips)
        along_h, along_w = context[:, :, :height], context[:, :, height:]
        gate_w = self.gate_w(along_w).transpose(2, 3).sigmoid()
        coordinate = x * self.gate_h(along_h).sigmoid() * gate_w
        spatial = self.spatial(coordinate.amax(dim=1, keepdim=True)).sigmoid()
        # CPNet gates the stage's own map with the spatial attention of the attended one.
        return self.project(x * spatial)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP (GELU), layer scale, residual: (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(),
                                 nn.Linear(4 * channels, channels))
        self.gamma = nn.Parameter(torch.full((channels,), LAYER_SCALE_INIT))

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm(self.depthwise(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class CPNetHead(nn.Module):
    """Stage maps (B, C_s, H_s, W_s), stage 0 (1/4) first -> saliency logits.

    forward(features, output_size) returns four (B, 1, *output_size) logit maps: the
    main prediction first, then the side outputs of the 1/4, 1/8 and 1/16 decoder maps.
    `fuse` sums them (the saliency logit used at inference).
    """

    def __init__(self, in_channels: list[int], channels: list[int]) -> None:
        super().__init__()
        if len(in_channels) != 4 or len(channels) != 4:
            raise ValueError("the CPNet head reads four stages")
        # reduce[s]: stage s+1 -> stage s's width, before it joins stage s.
        self.reduce = nn.ModuleList(conv_bn_gelu(in_channels[s + 1], in_channels[s])
                                    for s in range(3))
        self.aggregate = nn.ModuleList(
            [*(conv_bn_gelu(2 * in_channels[s], channels[s]) for s in range(3)),
             conv_bn_gelu(in_channels[3], channels[3])])
        self.fusion = nn.ModuleList(AttentionFusion(c) for c in channels)
        # decode[s] takes the deeper decoder map (and stage s's fused map) to the next width.
        self.decode = nn.ModuleList([
            conv_bn_gelu(2 * channels[0], channels[0] // 2),
            conv_bn_gelu(2 * channels[1], channels[0]),
            conv_bn_gelu(2 * channels[2], channels[1]),
            conv_bn_gelu(channels[3], channels[2]),
        ])
        self.refine = nn.ModuleList(ConvNeXtBlock(c) for c in
                                    (channels[0] // 2, channels[0], channels[1]))
        self.predict_hidden = conv_bn_gelu(channels[0] // 2, channels[0] // 4)
        self.predict = nn.Conv2d(channels[0] // 4, 1, 3, padding=1)
        self.side = nn.ModuleList(nn.Conv2d(c, 1, 3, padding=1)
                                  for c in (channels[0], channels[1], channels[2]))

    def forward(self, features: list[Tensor], output_size: tuple[int, int]) -> list[Tensor]:
        fused = [self.fusion[s](self._aggregate(features, s)) for s in range(4)]
        decoded = {}  # decoder map at stage s's size, after decode[s+1]
        x = fused[3]
        for s in (3, 2, 1):
            x = _resize(self.decode[s](x), fused[s - 1].shape[-2:])
            if s < 3:
                x = self.refine[s](x)
            decoded[s - 1] = x
            x = torch.cat([x, fused[s - 1]], dim=1)
        height, width = fused[0].shape[-2:]
        x = self.refine[0](_resize(self.decode[0](x), (2 * height, 2 * width)))
        main = self.predict(_resize(self.predict_hidden(x), output_size))
        sides = [_resize(self.side[s](decoded[s]), output_size) for s in range(3)]
        return [main, *sides]

    def _aggregate(self, features: list[Tensor], stage: int) -> Tensor:
        """Stage ``stage`` merged with the deeper stage's reduced, upsampled map."""
        if stage == 3:
            return self.aggregate[3](features[3])
        deeper = _resize(self.reduce[stage](features[stage + 1]), features[stage].shape[-2:])
        return self.aggregate[stage](torch.cat([features[stage], deeper], dim=1))

    @staticmethod
    def fuse(logits: list[Tensor]) -> Tensor:
        """The inference logit: the sum of the four maps (CPNet's test script)."""
        return torch.stack(logits).sum(dim=0)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) to ``size``; a no-op when already there."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
