"""One frame's whole computation as a module: raw frame tensors in, results out.

`FrameStep` is what the engine runs per frame on every back-end: the torch
back-end calls it on its static buffers (and captures it in a CUDA graph), the
exported back-ends run its ONNX export. It is shape-static and free of host
synchronisation, so both are possible. The score threshold and the class mask
are inputs, so they change at run time without a new capture or export.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..model import IVTuningModel, ModelConfig
from ..model.postprocess import (
    Letterbox,
    boxes_to_original,
    filter_mask,
    saliency_to_original,
    segmentation_to_original,
    select_detections,
)
from .preprocess import Preprocessor, ir_to_input, ir_to_unit, network_letterbox

# The results of a step, in this order in an export.
OUTPUT_NAMES = ("boxes", "scores", "labels", "keep", "class_map", "saliency")
IR_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float32": np.float32}


@dataclass(frozen=True)
class FrameLayout:
    """What a compiled step is specialised to: frame sizes, the IR's dtype, channel order.

    ``ir_shape`` None: RGB-only frames. ``ir_dtype`` is "uint8" (mono8, scaled by
    1/255), "uint16" (raw counts) or "float32" (temperature), both with gain control.
    """

    rgb_shape: tuple[int, int]
    ir_shape: tuple[int, int] | None = None
    ir_dtype: str | None = None
    bgr: bool = False

    def __post_init__(self) -> None:
        if (self.ir_shape is None) != (self.ir_dtype is None):
            raise ValueError("a frame layout has both ir_shape and ir_dtype, or neither")
        if self.ir_dtype is not None and self.ir_dtype not in IR_DTYPES:
            raise ValueError(f"ir_dtype must be one of {', '.join(IR_DTYPES)}, got "
                             f"'{self.ir_dtype}'")

    @classmethod
    def of(cls, rgb: np.ndarray, ir: np.ndarray | None, bgr: bool = False) -> FrameLayout:
        """The layout of one frame pair."""
        if ir is None:
            return cls(tuple(rgb.shape[:2]), None, None, bgr)
        return cls(tuple(rgb.shape[:2]), tuple(ir.shape), np.dtype(ir.dtype).name, bgr)

    def describe(self) -> str:
        """e.g. ``rgb 512x640 + ir 512x640 uint16`` (height x width)."""
        text = f"rgb {self.rgb_shape[0]}x{self.rgb_shape[1]}{' bgr' if self.bgr else ''}"
        if self.ir_shape is not None:
            text += f" + ir {self.ir_shape[0]}x{self.ir_shape[1]} {self.ir_dtype}"
        return text


class FrameStep(nn.Module):
    """Preprocessing, the model and graph-safe post-processing for one frame layout.

    forward(rgb, ir, grid, score_threshold, class_mask) takes the uint8 (H, W, 3)
    frame, the raw IR (h, w) (None for RGB-only layouts), the IR sampling grid
    (1, in_h, in_w, 2) of `registration.ir_sampling_grid`, a 0-dim float threshold and
    a (K,) bool class mask; it returns the tensors of `OUTPUT_NAMES` the model has:
    boxes (1, k, 4) in original pixels, scores, labels, keep (1, k) bool, and
    class_map (1, H, W) uint8, saliency (1, H, W) uint8 (0..255). ``gain_in_graph``
    False: ``ir`` is already in [0, 1] (`preprocess.ir_to_unit` ran before the step).
    """

    def __init__(self, model: IVTuningModel, config: ModelConfig, layout: FrameLayout,
                 max_detections: int, device: torch.device,
                 autocast_dtype: torch.dtype | None = None, gain_in_graph: bool = True) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.layout = layout
        self.max_detections = max_detections
        self.autocast_dtype = autocast_dtype
        self.gain_in_graph = gain_in_graph
        self.preprocessor = Preprocessor(config.input, device)
        self.letterbox: Letterbox = network_letterbox(*layout.rgb_shape, config.input)
        self.valid_sizes = _valid_sizes(self.letterbox, device)

    def forward(self, rgb: Tensor, ir: Tensor | None, grid: Tensor | None,
                score_threshold: Tensor, class_mask: Tensor) -> dict[str, Tensor]:
        outputs = self.infer(*self.preprocess(rgb, ir, grid))
        return self.postprocess(outputs, score_threshold, class_mask)

    def preprocess(self, rgb: Tensor, ir: Tensor | None,
                   grid: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Raw frames -> network inputs (letterboxed, registered, normalised)."""
        rgb_input = self.preprocessor.rgb(rgb, self.letterbox, self.layout.bgr)
        if ir is None:
            return rgb_input, None
        unit = ir_to_unit(ir, self.config.input) if self.gain_in_graph else ir
        return rgb_input, ir_to_input(unit, grid, self.config.input,
                                      self.config.prompter.ir_in_channels)

    def infer(self, rgb_input: Tensor, ir_input: Tensor | None) -> dict:
        """The model, under autocast when the step has a reduced precision."""
        autocast = (torch.autocast(rgb_input.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else nullcontext())
        with autocast:
            return self.model(rgb_input, ir_input, valid_sizes=self.valid_sizes)

    def postprocess(self, outputs: dict, score_threshold: Tensor,
                    class_mask: Tensor) -> dict[str, Tensor]:
        """Model outputs -> results in original pixels (graph-safe)."""
        result = {}
        if "pred_logits" in outputs:
            scores, labels, boxes = select_detections(
                outputs["pred_logits"].float(), outputs["pred_boxes"].float(),
                self.config.detection.num_select)
            result["boxes"] = boxes_to_original(boxes, self.letterbox)
            result["scores"], result["labels"] = scores, labels
            result["keep"] = filter_mask(scores, labels, score_threshold, class_mask,
                                         self.max_detections)
        if "seg_logits" in outputs:
            class_map = segmentation_to_original(outputs["seg_logits"].float(), self.letterbox)
            result["class_map"] = class_map.to(torch.uint8)
        if "sod_logits" in outputs:
            result["saliency"] = saliency_to_original(outputs["sod_logits"].float(),
                                                      self.letterbox)
        return result


def _valid_sizes(letterbox: Letterbox, device: torch.device) -> Tensor | None:
    """The model's ``valid_sizes`` (1, 2) for this letterbox, a static device buffer (made
    once, outside any graph capture); None when the image fills the input, which takes
    the model's unpadded path (the same numbers, without masks)."""
    if letterbox.valid_size == (letterbox.in_h, letterbox.in_w):
        return None
    return torch.tensor([letterbox.valid_size], dtype=torch.float32, device=device)
