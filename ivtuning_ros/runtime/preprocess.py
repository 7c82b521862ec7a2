"""Raw frames -> network input, on the model's device. The one preprocessing of the project:
the engine, training and evaluation all call these functions.

RGB: uint8 (H, W, 3) -> float, letterboxed (keep-ratio bilinear resize into the top
left, padding right/bottom as mmdet pads, 0 after normalisation, i.e. the mean colour)
and normalised. The model is told the image region (``valid_sizes``) and masks the rest.
IR: mono8, 16-bit counts or float temperature (h, w) -> [0, 1] (``/255``, or
automatic gain control), warped into the letterboxed RGB geometry by one
precomputed `grid_sample` grid (`ir_sampling_grid`), normalised.

Every function here is shape-static and free of host synchronisation, so the
engine can capture it in a CUDA graph.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.config import InputConfig
from ..model.postprocess import Letterbox, letterbox_for

# Gain-control statistics come from at most this many pixels of a frame (a strided
# subsample): enough for stable percentiles, cheap to sort.
AGC_SAMPLE_PIXELS = 65536
# Frames over this many pixels are shrunk while still uint8 on the CPU: a 16 MP frame as
# float is 200 MB and 60-90 ms of conversion; shrunk first, 7 ms. Smaller frames keep the
# float resize that training used (the uint8 one rounds to whole grey levels).
UINT8_RESIZE_PIXELS = 1 << 22


def network_letterbox(rgb_height: int, rgb_width: int, config: InputConfig) -> Letterbox:
    """Where an RGB frame of this size lands in the network input: its top-left
    ``valid_size`` region."""
    return letterbox_for(rgb_height, rgb_width, config.height, config.width)


class Preprocessor:
    """The input normalisation of one model config, with its constants on one device.

    Constants live on the device up front: creating them per call would be a
    host-to-device copy, which CUDA graph capture forbids.
    """

    def __init__(self, config: InputConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.rgb_mean = torch.tensor(config.rgb_mean, device=device).view(1, 3, 1, 1) * 255.0
        self.rgb_std = torch.tensor(config.rgb_std, device=device).view(1, 3, 1, 1) * 255.0

    def rgb(self, rgb: Tensor, letterbox: Letterbox, bgr: bool = False) -> Tensor:
        """uint8 (H, W, 3) -> normalised, letterboxed (1, 3, in_h, in_w) float32."""
        x = rgb.permute(2, 0, 1)[None]
        rows, cols = letterbox.valid_slices
        size = (rows.stop - rows.start, cols.stop - cols.start)
        if _shrink_as_uint8(x, size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.float()
        if bgr:
            x = x.flip(1)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = (x - self.rgb_mean) / self.rgb_std
        return F.pad(x, (cols.start, letterbox.in_w - cols.stop,
                         rows.start, letterbox.in_h - rows.stop))

    def ir(self, ir: Tensor, grid: Tensor, channels: int) -> Tensor:
        """Raw IR (h, w) -> registered, letterboxed, normalised (1, channels, in_h, in_w)."""
        return ir_to_input(ir_to_unit(ir, self.config), grid, self.config, channels)


def _shrink_as_uint8(rgb: Tensor, size: tuple[int, int]) -> bool:
    """Whether to shrink a uint8 frame before converting it: a large frame in eager CPU
    code (not in an export or a compiled graph, whose traced steps stay the float ones)."""
    return (rgb.dtype == torch.uint8 and rgb.device.type == "cpu"
            and rgb.shape[-2] * rgb.shape[-1] > UINT8_RESIZE_PIXELS
            and rgb.shape[-2] > size[0] and rgb.shape[-1] > size[1]
            and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
                     or torch.compiler.is_compiling()))


def ir_to_unit(ir: Tensor, config: InputConfig) -> Tensor:
    """Raw IR (h, w) -> float32 (h, w) in [0, 1], never NaN.

    uint8 (mono8) is divided by 255. 16-bit counts and float temperatures go
    through gain control: ``percentile`` clips each frame at its
    ``ir_percentiles`` (of its finite pixels), ``fixed`` at ``ir_fixed_range``.
    +inf maps to 1, -inf and NaN to 0; a frame without a finite pixel is all 0.
    """
    if ir.dtype == torch.uint8:
        return ir.float() / 255.0
    x = ir.float()
    if config.ir_agc == "fixed":
        low, high = config.ir_fixed_range
        unit = (x - low) / (high - low)
    else:
        low, high = _percentiles(x, config.ir_percentiles)
        unit = (x - low) / (high - low).clamp_min(1e-6)
    # clamp keeps NaN: from NaN pixels, and everywhere in a frame without a finite pixel
    # (its percentiles are not finite).
    return torch.nan_to_num(unit.clamp(0.0, 1.0), nan=0.0)


def _percentiles(x: Tensor, percents: list[float]) -> tuple[Tensor, Tensor]:
    """Linear-interpolated percentiles of the finite pixels of a strided subsample.

    Shape-static and without host synchronisation: non-finite values become +inf,
    which sorts after every finite value (NaN would not do: CUDA's radix sort
    orders NaN by its sign bit); the interpolation positions come from the count
    of finite values, as tensors. No finite pixel: both results are not finite.
    """
    step = max(1, int((x.numel() / AGC_SAMPLE_PIXELS) ** 0.5 + 0.999))
    values = x[::step, ::step].flatten()
    finite = torch.isfinite(values)
    values = values.masked_fill(~finite, float("inf")).sort().values
    last = (finite.sum() - 1).clamp_min(0).double()
    # float64 positions and weights, as the Python floats of static indices would be; the
    # percents are Python scalars: a tensor of them would be a copy, forbidden in capture.
    position = torch.stack([last * (percent / 100.0) for percent in percents])
    below = position.floor()
    above = torch.minimum(below + 1, last)
    fraction = position - below
    low_high = (values.gather(0, below.long()) * (1 - fraction).float()
                + values.gather(0, above.long()) * fraction.float())
    return low_high[0], low_high[1]


def count_non_finite(ir: np.ndarray) -> int:
    """How many pixels of a raw IR frame (any shape) are NaN or infinite; integer frames
    cannot hold any and are not scanned."""
    if not np.issubdtype(ir.dtype, np.floating):
        return 0
    return int(ir.size - np.count_nonzero(np.isfinite(ir)))


def ir_to_input(ir_unit: Tensor, grid: Tensor, config: InputConfig, channels: int) -> Tensor:
    """[0, 1] IR (h, w) -> registered, letterboxed, normalised (1, channels, in_h, in_w).

    ``grid`` comes from `ir_sampling_grid`; pixels the IR camera does not see are 0.
    """
    warped = F.grid_sample(ir_unit[None, None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return ((warped - config.ir_mean) / config.ir_std).expand(-1, channels, -1, -1)
