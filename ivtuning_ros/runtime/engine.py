"""The inference engine: raw RGB + IR frames in, detections and class maps out.

Per frame: one host-to-device copy of the frame from pinned, reused buffers;
preprocessing (IR gain control, IR -> RGB warp by a cached grid, letterbox,
normalisation), the model under autocast and the graph-safe post-processing
all run on the device. On CUDA that whole step is captured once per frame
layout into a CUDA graph and replayed; anything the capture cannot take falls
back to eager with one log line. The CPU runs the same step eagerly on the same
static buffers.

Pipelines are kept per frame layout in a small LRU (``max_layouts``): a stream
whose frame size keeps changing must not grow memory without bound.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..model import IVTuningModel, ModelConfig
from ..model.postprocess import (
    Letterbox,
    boxes_to_original,
    filter_mask,
    segmentation_to_original,
    select_detections,
)
from .buffers import FrameBuffers
from .palette import colorize, palette
from .preprocess import Preprocessor, ir_to_unit, network_letterbox
from .registration import (
    ir_sampling_grid,
    rgb_geometry_grid,
    scaling_homography,
    validate_homography,
    warp_ir_to_rgb,
)

LOG = logging.getLogger("ivtuning.engine")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
IR_DTYPES = (np.uint8, np.uint16, np.float32)


@dataclass
class EngineOptions:
    """How the engine runs a model. ``precision`` None picks fp16 on CUDA, fp32 on CPU."""

    device: str = "cpu"
    precision: str | None = None
    cuda_graphs: bool = True
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = True
    score_threshold: float = 0.3
    class_filter: list[str] | None = None
    max_detections: int = 100
    max_layouts: int = 4


@dataclass
class Detections:
    """N detections in original RGB pixels: boxes (N, 4) xyxy float32, scores, labels int64."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class Result:
    """One frame's output. ``class_map`` is (H, W) uint8 at RGB resolution."""

    detections: Detections | None
    class_map: np.ndarray | None
    ir_used: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    colours: np.ndarray | None = None

    def color_map(self) -> np.ndarray | None:
        """The class map as an (H, W, 3) uint8 RGB image."""
        return None if self.class_map is None else colorize(self.class_map, self.colours)


class _Pipeline:
    """Static buffers and the step (maybe a CUDA graph) for one frame layout."""

    def __init__(self, engine: Engine, rgb_shape: tuple[int, ...],
                 ir_shape: tuple[int, ...] | None, ir_dtype: np.dtype | None, bgr: bool) -> None:
        self.engine = engine
        self.bgr = bgr
        self.buffers = FrameBuffers(rgb_shape, ir_shape, ir_dtype, engine.device)
        self.letterbox: Letterbox = network_letterbox(rgb_shape[0], rgb_shape[1],
                                                      engine.config.input)
        self.valid_sizes = _valid_sizes(self.letterbox, engine.device)
        self.ir_shape = ir_shape
        self.grid = (torch.zeros(1, self.letterbox.in_h, self.letterbox.in_w, 2,
                                 device=engine.device) if ir_shape else None)
        self.homography: np.ndarray | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_outputs: dict[str, Tensor] = {}
        self.capture_tried = False

    def set_homography(self, homography: np.ndarray | None) -> None:
        """Recompute the IR sampling grid only when the homography changes."""
        if self.ir_shape is None:
            return
        if homography is None:
            homography = scaling_homography(*self.ir_shape, self.letterbox.orig_h,
                                            self.letterbox.orig_w)
        homography = validate_homography(homography)
        if self.homography is None or not np.array_equal(homography, self.homography):
            self.grid.copy_(ir_sampling_grid(homography, self.ir_shape, self.letterbox,
                                             self.engine.device))
            self.homography = homography

    def preprocess(self) -> tuple[Tensor, Tensor | None]:
        engine = self.engine
        rgb = engine.preprocessor.rgb(self.buffers.rgb, self.letterbox, self.bgr)
        ir = None
        if self.buffers.ir is not None:
            ir = engine.preprocessor.ir(self.buffers.ir, self.grid,
                                        engine.config.prompter.ir_in_channels)
        if engine.options.channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        return rgb, ir

    def forward(self, rgb: Tensor, ir: Tensor | None) -> dict:
        engine = self.engine
        autocast = (torch.autocast(engine.device.type, dtype=engine.autocast_dtype)
                    if engine.autocast_dtype is not None else nullcontext())
        with autocast:
            return engine.forward(rgb, ir, valid_sizes=self.valid_sizes)

    def postprocess(self, outputs: dict) -> dict[str, Tensor]:
        engine = self.engine
        result = {}
        if "pred_logits" in outputs:
            scores, labels, boxes = select_detections(
                outputs["pred_logits"].float(), outputs["pred_boxes"].float(),
                engine.config.detection.num_select)
            result["boxes"] = boxes_to_original(boxes, self.letterbox)
            result["keep"] = filter_mask(scores, labels, engine.score_threshold,
                                         engine.class_mask, engine.options.max_detections)
            result["scores"], result["labels"] = scores, labels
        if "seg_logits" in outputs:
            class_map = segmentation_to_original(outputs["seg_logits"].float(), self.letterbox)
            result["class_map"] = class_map.to(torch.uint8)
        return result

    def step(self) -> dict[str, Tensor]:
        """Preprocess + model + post-processing on the static buffers (graph-capturable)."""
        return self.postprocess(self.forward(*self.preprocess()))

    def release(self) -> None:
        """Drop the graph, its outputs and the buffers, even if the pipeline is still
        referenced: graph outputs live in the graph's private memory pool, which is only
        freed once both are gone."""
        self.graph, self.graph_outputs = None, {}
        self.buffers = self.grid = None


class Engine:
    """Runs an `IVTuningModel` on raw frames; see the module docstring.

    Not thread-safe: one thread calls `infer` (the node's worker).
    """

    def __init__(self, model: IVTuningModel, config: ModelConfig,
                 options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.config = config
        self.device = torch.device(self.options.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available; "
                             "use device 'cpu'")
        precision = self.options.precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"'{precision}'")
        self.precision = precision
        self.autocast_dtype = PRECISIONS[precision]
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
        self.model = model.eval().to(self.device)
        if self.options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if self.options.compile else self.model
        self.preprocessor = Preprocessor(config.input, self.device)
        self.class_names = list(config.detection.classes) if config.detection else []
        self.seg_class_names = list(config.segmentation.classes) if config.segmentation else []
        self.colours = palette(len(self.seg_class_names))
        self.score_threshold = torch.tensor(self.options.score_threshold, device=self.device)
        self.class_mask = torch.ones(max(len(self.class_names), 1), dtype=torch.bool,
                                     device=self.device)
        self.set_class_filter(self.options.class_filter)
        self.use_graphs = self.options.cuda_graphs and self.device.type == "cuda"
        max_layouts = self.options.max_layouts
        if isinstance(max_layouts, bool) or not isinstance(max_layouts, int) or max_layouts < 1:
            raise ValueError(f"max_layouts must be an integer >= 1, got {max_layouts!r}")
        self._pipelines: OrderedDict[tuple, _Pipeline] = OrderedDict()  # least recent first
        self._display_grid: tuple[tuple | None, Tensor | None] = (None, None)

    def set_score_threshold(self, threshold: float) -> None:
        """Change the score threshold without re-capturing graphs."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score threshold must lie in [0, 1], got {threshold}")
        self.score_threshold.fill_(threshold)

    def set_class_filter(self, names: list[str] | None) -> None:
        """Report only these detection classes (None or empty: all)."""
        unknown = sorted(set(names or []) - set(self.class_names))
        if unknown:
            raise ValueError(f"unknown class name(s) {unknown}; the model detects "
                             f"{self.class_names}")
        allowed = [not names or name in names for name in self.class_names] or [True]
        self.class_mask.copy_(torch.tensor(allowed, dtype=torch.bool))

    def infer(self, rgb: np.ndarray, ir: np.ndarray | None = None,
              homography: np.ndarray | None = None, bgr: bool = False) -> Result:
        """Run one frame.

        Args:
            rgb: uint8 (H, W, 3), RGB order (``bgr=True`` for BGR).
            ir: IR frame of its own size, (h, w) uint8 (mono8), uint16 (raw counts)
                or float32 (temperature); None runs RGB-only (``ir_used`` False).
            homography: 3x3 IR -> RGB pixel mapping; None assumes co-located
                cameras with the same field of view.
        """
        _check_frame(rgb, ir)
        ir_shape = ir.shape if ir is not None else None
        ir_dtype = ir.dtype if ir is not None else None
        pipeline = self._pipeline((rgb.shape, ir_shape, ir_dtype, bgr))
        pipeline.set_homography(homography)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        pipeline.buffers.upload(rgb, ir)
        with torch.inference_mode():
            outputs = self._run(pipeline, timings)
            result = self._download(outputs, ir is not None)
        self._synchronize()
        timings["total"] = 1000 * (time.perf_counter() - start)
        result.timings_ms = timings
        return result

    def _pipeline(self, key: tuple) -> _Pipeline:
        """The pipeline of a frame layout, built on first use; evicts the least recent one
        beyond ``max_layouts``."""
        pipeline = self._pipelines.get(key)
        if pipeline is not None:
            self._pipelines.move_to_end(key)
            return pipeline
        if len(self._pipelines) >= self.options.max_layouts:
            self._evict(self.options.max_layouts - 1)
        pipeline = self._pipelines[key] = _Pipeline(self, *key)
        return pipeline

    def _evict(self, keep: int) -> None:
        """Release the least recently used pipelines down to ``keep``, and hand their
        memory back to the driver or the OS."""
        while len(self._pipelines) > keep:
            self._pipelines.popitem(last=False)[1].release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        else:
            _trim_host_heap()

    def warmup(self) -> float:
        """Run input-sized frames, with and without IR, so the first real frame is not slow
        (lazy kernel set-up, cuDNN autotuning); returns the seconds it took."""
        start = time.perf_counter()
        height, width = self.config.input.height, self.config.input.width
        rgb = np.zeros((height, width, 3), np.uint8)
        self.infer(rgb, np.zeros((height, width), np.uint16))
        self.infer(rgb, None)
        return time.perf_counter() - start

    def register_ir(self, ir: np.ndarray, homography: np.ndarray | None,
                    rgb_shape: tuple[int, ...]) -> np.ndarray:
        """IR in RGB geometry as uint8 (H, W), with the engine's gain control: for display."""
        _check_frame(np.zeros((1, 1, 3), np.uint8), ir)
        if homography is None:
            homography = scaling_homography(*ir.shape, rgb_shape[0], rgb_shape[1])
        homography = validate_homography(homography)
        key = (homography.tobytes(), ir.shape, tuple(rgb_shape[:2]))
        if self._display_grid[0] != key:  # the grid only changes with the rig or sizes
            grid = rgb_geometry_grid(homography, ir.shape, rgb_shape[:2], self.device)
            self._display_grid = (key, grid)
        with torch.inference_mode():
            unit = ir_to_unit(torch.from_numpy(np.ascontiguousarray(ir)).to(self.device),
                              self.config.input)
            warped = warp_ir_to_rgb(unit, homography, rgb_shape[:2], self._display_grid[1])
            return (warped * 255).round().to(torch.uint8).cpu().numpy()

    def _run(self, pipeline: _Pipeline, timings: dict[str, float]) -> dict[str, Tensor]:
        if self.use_graphs and not pipeline.capture_tried:
            pipeline.capture_tried = True
            self._capture(pipeline)
        if pipeline.graph is not None:
            start = time.perf_counter()
            pipeline.graph.replay()
            self._synchronize()
            timings["graph"] = 1000 * (time.perf_counter() - start)
            return pipeline.graph_outputs
        inputs = self._timed(timings, "preprocess", pipeline.preprocess)
        outputs = self._timed(timings, "model", lambda: pipeline.forward(*inputs))
        return self._timed(timings, "postprocess", lambda: pipeline.postprocess(outputs))

    def _capture(self, pipeline: _Pipeline) -> None:
        """Capture the step into a CUDA graph; on failure log once and stay eager."""
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up: cuDNN autotuning, lazy allocations, caches
                    pipeline.step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                pipeline.graph_outputs = pipeline.step()
            pipeline.graph = graph
        except Exception as exc:  # any capture failure must leave a working engine
            pipeline.graph, pipeline.graph_outputs = None, {}
            LOG.warning("CUDA graph capture failed (%s: %s); running eagerly",
                        type(exc).__name__, exc)

    def _timed(self, timings: dict[str, float], name: str, run):
        start = time.perf_counter()
        value = run()
        self._synchronize()
        timings[name] = 1000 * (time.perf_counter() - start)
        return value

    def _download(self, outputs: dict[str, Tensor], ir_used: bool) -> Result:
        host = {name: tensor.to("cpu", non_blocking=True) for name, tensor in outputs.items()}
        self._synchronize()
        detections = None
        if "keep" in host:
            keep = host["keep"][0].numpy()
            detections = Detections(boxes=host["boxes"][0].numpy()[keep].astype(np.float32),
                                    scores=host["scores"][0].numpy()[keep],
                                    labels=host["labels"][0].numpy()[keep])
        class_map = host["class_map"][0].numpy() if "class_map" in host else None
        return Result(detections, class_map, ir_used, colours=self.colours)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    try:
        if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (ValueError, OSError, AttributeError):  # no such confstr name, library or symbol
        return None


def _trim_host_heap() -> None:
    """Return freed heap memory to the OS: glibc keeps an evicted layout's freed frame
    buffers in its arenas otherwise (about 6 MiB more after 200 frame sizes, measured)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _valid_sizes(letterbox: Letterbox, device: torch.device) -> Tensor | None:
    """The model's ``valid_sizes`` (1, 2) for this letterbox, a static device buffer (made
    once, outside any graph capture); None when the image fills the input, which takes
    the model's unpadded path (the same numbers, without masks)."""
    if letterbox.valid_size == (letterbox.in_h, letterbox.in_w):
        return None
    return torch.tensor([letterbox.valid_size], dtype=torch.float32, device=device)


def _check_frame(rgb: np.ndarray, ir: np.ndarray | None) -> None:
    """ValueError naming what is wrong with an input frame and what is expected."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or min(rgb.shape[:2]) == 0:
        raise ValueError("rgb must be a non-empty uint8 array (H, W, 3), got "
                         f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    if ir is None:
        return
    if not isinstance(ir, np.ndarray) or ir.ndim != 2 or min(ir.shape) == 0 \
            or ir.dtype not in IR_DTYPES:
        raise ValueError("ir must be a non-empty (h, w) array of uint8 (mono8), uint16 (raw) "
                         f"or float32 (temperature), got {getattr(ir, 'dtype', type(ir))} "
                         f"{getattr(ir, 'shape', '')}")
