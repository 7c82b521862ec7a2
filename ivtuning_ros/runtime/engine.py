"""The inference engine: raw RGB + IR frames in, detections and class maps out.

Per frame: one host-to-device copy of the frame from pinned, reused buffers;
preprocessing (IR gain control, IR -> RGB warp by a cached grid, letterbox,
normalisation), the model under autocast and the graph-safe post-processing
all run on the device. On CUDA that whole step is captured once per frame
layout into a CUDA graph and replayed; anything the capture cannot take falls
back to eager with one log line. The CPU runs the same step eagerly on the same
static buffers. That step is one module, `step.FrameStep`; the exported back-ends
(OpenVINO, ONNX Runtime, TensorRT: `backends`) run its ONNX export, made on first
use of a frame layout and kept on disk.

Pipelines are kept per frame layout in a small LRU (``max_layouts``): a stream
whose frame size keeps changing must not grow memory without bound. A layout over
`LARGE_LAYOUT_PIXELS` is kept only while it is the most recent one, and the host heap
is trimmed after its frames, so one huge frame does not hold its memory for good.
"""
from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..model import IVTuningModel, ModelConfig
from ..model.postprocess import Letterbox
from .backends import check_backend, open_runner, parity, resolve_precision
from .backends.onnx_export import cached_export, default_cache_dir, example_inputs
from .buffers import FrameBuffers
from .palette import colorize, palette
from .preprocess import ir_to_unit, network_letterbox
from .registration import (
    ir_sampling_grid,
    rgb_geometry_grid,
    scaling_homography,
    validate_homography,
    warp_ir_to_rgb,
)
from .step import IR_DTYPES, FrameLayout, FrameStep

LOG = logging.getLogger("ivtuning.engine")
# RGB width x height from which a layout's pipeline is released as soon as another layout
# runs (and the host heap trimmed after each of its frames): 4K UHD and up.
LARGE_LAYOUT_PIXELS = 1 << 22
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class EngineOptions:
    """How the engine runs a model.

    ``backend``: torch, openvino, onnxruntime or tensorrt (see `backends`).
    ``precision`` None picks the back-end's best: torch fp16 on CUDA and fp32 on the
    CPU, OpenVINO bf16 where the CPU has it, else fp32, TensorRT fp16.
    ``cache_dir``: exported models and built engines (default `default_cache_dir`);
    ``source`` names the checkpoint in their metadata.
    """

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
    backend: str = "torch"
    cache_dir: str | None = None
    source: str = ""


@dataclass
class Detections:
    """N detections in original RGB pixels: boxes (N, 4) xyxy float32, scores, labels int64."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class Result:
    """One frame's output. ``class_map`` is (H, W) uint8 at RGB resolution; ``saliency``
    (H, W) uint8 (0..255, the salient-object probability x 255) at RGB resolution, or None
    when the model has no SOD head."""

    detections: Detections | None
    class_map: np.ndarray | None
    ir_used: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    colours: np.ndarray | None = None
    saliency: np.ndarray | None = None

    def color_map(self) -> np.ndarray | None:
        """The class map as an (H, W, 3) uint8 RGB image."""
        return None if self.class_map is None else colorize(self.class_map, self.colours)


class _Pipeline:
    """One frame layout on the torch back-end: static buffers, its `FrameStep`, and the
    step captured in a CUDA graph where that works."""

    def __init__(self, engine: Engine, layout: FrameLayout) -> None:
        self.engine = engine
        self.step = FrameStep(engine.forward, engine.config, layout,
                              engine.options.max_detections, engine.device,
                              engine.autocast_dtype)
        self.grid = _IRGrid(layout, self.step.letterbox, engine.device)
        ir_dtype = IR_DTYPES[layout.ir_dtype] if layout.ir_dtype else None
        self.buffers = FrameBuffers((*layout.rgb_shape, 3), layout.ir_shape, ir_dtype,
                                    engine.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_outputs: dict[str, Tensor] = {}
        self.capture_tried = False

    def run(self, timings: dict[str, float]) -> dict[str, Tensor]:
        engine = self.engine
        if engine.use_graphs and not self.capture_tried:
            self.capture_tried = True
            self._capture()
        if self.graph is not None:
            start = time.perf_counter()
            self.graph.replay()
            engine.synchronize()
            timings["graph"] = 1000 * (time.perf_counter() - start)
            return self.graph_outputs
        step, buffers = self.step, self.buffers
        inputs = engine.timed(timings, "preprocess",
                              lambda: step.preprocess(buffers.rgb, buffers.ir, self.grid.tensor))
        outputs = engine.timed(timings, "model", lambda: step.infer(*inputs))
        return engine.timed(timings, "postprocess", lambda: step.postprocess(
            outputs, engine.score_threshold, engine.class_mask))

    def whole_step(self) -> dict[str, Tensor]:
        """Preprocess + model + post-processing on the static buffers (graph-capturable)."""
        return self.step(self.buffers.rgb, self.buffers.ir, self.grid.tensor,
                         self.engine.score_threshold, self.engine.class_mask)

    def _capture(self) -> None:
        """Capture the step into a CUDA graph; on failure log once and stay eager."""
        device = self.engine.device
        try:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up: cuDNN autotuning, lazy allocations, caches
                    self.whole_step()
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.graph_outputs = self.whole_step()
            self.graph = graph
        except Exception as exc:  # any capture failure must leave a working engine
            self.graph, self.graph_outputs = None, {}
            LOG.warning("CUDA graph capture failed (%s: %s); running eagerly",
                        type(exc).__name__, exc)

    def release(self) -> None:
        """Drop the graph, its outputs and the buffers, even if the pipeline is still
        referenced: graph outputs live in the graph's private memory pool, which is only
        freed once both are gone."""
        self.graph, self.graph_outputs = None, {}
        self.buffers = self.grid = None


class _ExportedPipeline:
    """One frame layout on an exported back-end: its ONNX export compiled by the runner."""

    def __init__(self, engine: Engine, layout: FrameLayout) -> None:
        self.engine = engine
        self.gain_in_graph = engine.backend != "tensorrt"  # see tensorrt_runner
        step = FrameStep(engine.model, engine.config, layout, engine.options.max_detections,
                         torch.device("cpu"), gain_in_graph=self.gain_in_graph)
        self.grid = _IRGrid(layout, step.letterbox, torch.device("cpu"))
        self.onnx_path = cached_export(step, engine.cache_dir, engine.source)
        self.runner = open_runner(engine.backend, self.onnx_path, engine.device,
                                  engine.precision, engine.cache_dir)
        if engine.backend == "tensorrt":
            self._verify(step)
        self.inputs = example_inputs(step)

    def _verify(self, step: FrameStep) -> None:
        """Trust a new TensorRT engine only once it matches PyTorch on a probe frame; the
        verdict is kept beside the engine, so this runs once per engine."""
        verified = self.runner.verified_path
        if verified.is_file():
            return
        report = parity.compare(step, self.runner, parity.probe_inputs(step, self.gain_in_graph))
        parity.check(report, self.engine.backend)
        verified.write_text(json.dumps(report))
        LOG.info("TensorRT engine matches PyTorch on a probe frame: %s", report)

    def run(self, rgb: np.ndarray, ir: np.ndarray | None,
            timings: dict[str, float]) -> dict[str, np.ndarray]:
        engine = self.engine
        self.inputs["rgb"] = rgb
        if ir is not None:
            if self.gain_in_graph:
                self.inputs["ir"] = ir.astype(np.float32, copy=False)
            else:
                self.inputs["ir"] = ir_to_unit(torch.from_numpy(np.ascontiguousarray(ir)),
                                               engine.config.input).numpy()
            self.inputs["grid"] = self.grid.tensor.numpy()
        self.inputs["score_threshold"] = engine.score_threshold.cpu().numpy()
        self.inputs["class_mask"] = engine.class_mask.cpu().numpy()
        return engine.timed(timings, engine.backend, lambda: self.runner.run(self.inputs))

    def release(self) -> None:
        self.runner = self.grid = None


class _IRGrid:
    """The IR sampling grid of a layout, recomputed only when the homography changes."""

    def __init__(self, layout: FrameLayout, letterbox: Letterbox, device: torch.device) -> None:
        self.ir_shape = layout.ir_shape
        self.letterbox = letterbox
        self.device = device
        self.tensor = (torch.zeros(1, letterbox.in_h, letterbox.in_w, 2, device=device)
                       if layout.ir_shape else None)
        self.homography: np.ndarray | None = None

    def set_homography(self, homography: np.ndarray | None) -> None:
        if self.ir_shape is None:
            return
        if homography is None:
            homography = scaling_homography(*self.ir_shape, self.letterbox.orig_h,
                                            self.letterbox.orig_w)
        homography = validate_homography(homography)
        if self.homography is None or not np.array_equal(homography, self.homography):
            self.tensor.copy_(ir_sampling_grid(homography, self.ir_shape, self.letterbox,
                                               self.device))
            self.homography = homography


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
        self.backend = self.options.backend
        check_backend(self.backend)
        self.cache_dir = Path(self.options.cache_dir or default_cache_dir())
        self.source = self.options.source
        if self.backend == "torch":
            precision = self.options.precision or ("fp16" if self.device.type == "cuda"
                                                   else "fp32")
            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                                 f"'{precision}'")
            self.autocast_dtype = PRECISIONS[precision]
        else:  # exported back-ends: export in fp32 on the CPU, the runtime sets precision
            precision = resolve_precision(self.backend, self.device, self.options.precision)
            self.autocast_dtype = None
        self.precision = precision
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
        model_device = self.device if self.backend == "torch" else torch.device("cpu")
        self.model = model.eval().to(model_device)
        if self.options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if self.options.compile else self.model
        self.class_names = list(config.detection.classes) if config.detection else []
        self.seg_class_names = list(config.segmentation.classes) if config.segmentation else []
        self.colours = palette(len(self.seg_class_names))
        self.score_threshold = torch.tensor(self.options.score_threshold, device=self.device)
        self.class_mask = torch.ones(max(len(self.class_names), 1), dtype=torch.bool,
                                     device=self.device)
        self.set_class_filter(self.options.class_filter)
        self.use_graphs = (self.options.cuda_graphs and self.device.type == "cuda"
                           and self.backend == "torch")
        max_layouts = self.options.max_layouts
        if isinstance(max_layouts, bool) or not isinstance(max_layouts, int) or max_layouts < 1:
            raise ValueError(f"max_layouts must be an integer >= 1, got {max_layouts!r}")
        # least recent first
        self._pipelines: OrderedDict[FrameLayout, _Pipeline | _ExportedPipeline] = OrderedDict()
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
        _check_letterbox(rgb, self.config)
        layout = FrameLayout.of(rgb, ir, bgr)
        pipeline = self._pipeline(layout)
        pipeline.grid.set_homography(homography)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if isinstance(pipeline, _ExportedPipeline):
            result = _result(pipeline.run(rgb, ir, timings), ir is not None, self.colours)
        else:
            pipeline.buffers.upload(rgb, ir)
            with torch.inference_mode():
                outputs = pipeline.run(timings)
                host = {name: tensor.to("cpu", non_blocking=True)
                        for name, tensor in outputs.items()}
                self.synchronize()
                result = _result({name: tensor.numpy() for name, tensor in host.items()},
                                 ir is not None, self.colours)
        timings["total"] = 1000 * (time.perf_counter() - start)
        result.timings_ms = timings
        if _is_large(layout) and self.device.type == "cpu":
            trim_host_heap()  # the frame's intermediates, freed by now
        return result

    def _pipeline(self, layout: FrameLayout) -> _Pipeline | _ExportedPipeline:
        """The pipeline of a frame layout, built on first use; evicts the least recent one
        beyond ``max_layouts``."""
        large = [other for other in self._pipelines if other != layout and _is_large(other)]
        if large:  # a large layout is kept only while it is the most recent one
            for other in large:
                self._pipelines.pop(other).release()
            self._evict(len(self._pipelines))
        pipeline = self._pipelines.get(layout)
        if pipeline is not None:
            self._pipelines.move_to_end(layout)
            return pipeline
        if len(self._pipelines) >= self.options.max_layouts:
            self._evict(self.options.max_layouts - 1)
        kind = _Pipeline if self.backend == "torch" else _ExportedPipeline
        pipeline = self._pipelines[layout] = kind(self, layout)
        return pipeline

    def _evict(self, keep: int) -> None:
        """Release the least recently used pipelines down to ``keep``, and hand their
        memory back to the driver or the OS."""
        while len(self._pipelines) > keep:
            self._pipelines.popitem(last=False)[1].release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        else:
            trim_host_heap()

    def warmup(self) -> float:
        """Run input-sized frames, with and without IR, so the first real frame is not slow
        (lazy kernel set-up, cuDNN autotuning); returns the seconds it took.

        Exported back-ends are not warmed up: each frame layout is exported and compiled
        on its first frame (kept on disk for later starts), and input-sized frames need
        not be the cameras' layout. ``ivtuning export --onnx`` exports ahead of time.
        """
        if self.backend != "torch":
            return 0.0
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

    def timed(self, timings: dict[str, float], name: str, run):
        start = time.perf_counter()
        value = run()
        self.synchronize()
        timings[name] = 1000 * (time.perf_counter() - start)
        return value

    def synchronize(self) -> None:
        """Wait for the device (a no-op on the CPU)."""
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


def trim_host_heap() -> None:
    """Return freed heap memory to the OS: glibc keeps an evicted layout's freed frame
    buffers in its arenas otherwise (about 6 MiB more after 200 frame sizes, measured)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _result(host: dict[str, np.ndarray], ir_used: bool, colours: np.ndarray) -> Result:
    """A `Result` from a step's outputs on the host (batch 1)."""
    detections = None
    if "keep" in host:
        keep = host["keep"][0]
        detections = Detections(boxes=host["boxes"][0][keep].astype(np.float32),
                                scores=host["scores"][0][keep],
                                labels=host["labels"][0][keep].astype(np.int64))
    class_map = host["class_map"][0] if "class_map" in host else None
    saliency = host["saliency"][0] if "saliency" in host else None
    return Result(detections, class_map, ir_used, colours=colours, saliency=saliency)


def _is_large(layout: FrameLayout) -> bool:
    return layout.rgb_shape[0] * layout.rgb_shape[1] > LARGE_LAYOUT_PIXELS


def _check_letterbox(rgb: np.ndarray, config: ModelConfig) -> None:
    """ValueError for an RGB shape so elongated that its letterbox into the network input
    is under one pixel across (65535x1, ...): nothing the model could see."""
    letterbox = network_letterbox(*rgb.shape[:2], config.input)
    if min(letterbox.valid_size) < 1:
        height, width = rgb.shape[:2]
        raise ValueError(f"rgb {width}x{height} is degenerate: it scales to "
                         f"{letterbox.valid_size[1]}x{letterbox.valid_size[0]} pixels in the "
                         f"{letterbox.in_w}x{letterbox.in_h} network input")


def _check_frame(rgb: np.ndarray, ir: np.ndarray | None) -> None:
    """ValueError naming what is wrong with an input frame and what is expected."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or min(rgb.shape[:2]) == 0:
        raise ValueError("rgb must be a non-empty uint8 array (H, W, 3), got "
                         f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    if ir is None:
        return
    if not isinstance(ir, np.ndarray) or ir.ndim != 2 or min(ir.shape) == 0 \
            or ir.dtype.name not in IR_DTYPES:
        raise ValueError("ir must be a non-empty (h, w) array of uint8 (mono8), uint16 (raw) "
                         f"or float32 (temperature), got {getattr(ir, 'dtype', type(ir))} "
                         f"{getattr(ir, 'shape', '')}")
