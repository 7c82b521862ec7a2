"""`FrameStep` -> ONNX: one file per model and frame layout, with metadata.

The TorchScript-based exporter (``dynamo=False``) is used: it exports the whole
step, gain control, warp and post-processing included. The dynamo exporter is
not used (DEPLOY_FACTS.md: it rejects the window attention's 5-D
``scaled_dot_product_attention`` inputs, and its tracing poisons caches of the
eager model in the same process).

Graph inputs: ``rgb`` uint8 (H, W, 3); ``ir`` float32 (h, w), the raw IR as
float (exact for 8- and 16-bit counts; the uint8 layout casts back inside the
graph, so mono8 keeps its 1/255 scaling) — float because TensorRT takes no
16-bit integer inputs; ``grid`` float32 (1, in_h, in_w, 2); ``score_threshold``
float32 scalar; ``class_mask`` bool (K,). Outputs: `step.OUTPUT_NAMES` the model
has. Batch 1, static shapes: a layout is fixed per camera stream.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from ...model.weights import state_fingerprint
from ..step import OUTPUT_NAMES, FrameStep
from . import BackendUnavailable

LOG = logging.getLogger("ivtuning.export")
OPSET = 17
# Bump when the exported graph changes (its contract, or a faster form of the same
# computation): cached files of older versions are not reused.
EXPORT_VERSION = 3
INPUT_NAMES = ("rgb", "ir", "grid", "score_threshold", "class_mask")


def default_cache_dir() -> Path:
    """Where exported models and built engines are kept: ``$IVTUNING_CACHE``, else
    ``$XDG_CACHE_HOME/ivtuning_ros``, else ``~/.cache/ivtuning_ros``."""
    if os.environ.get("IVTUNING_CACHE"):
        return Path(os.environ["IVTUNING_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ivtuning_ros"


class _ExportedStep(nn.Module):
    """The step with export-friendly inputs (float IR) and a tuple of outputs."""

    def __init__(self, step: FrameStep) -> None:
        super().__init__()
        self.step = step

    def forward(self, rgb: Tensor, ir: Tensor, grid: Tensor, score_threshold: Tensor,
                class_mask: Tensor) -> tuple[Tensor, ...]:
        if self.step.layout.ir_shape is None:
            ir = grid = None
        elif self.step.layout.ir_dtype == "uint8" and self.step.gain_in_graph:
            ir = ir.to(torch.uint8)
        outputs = self.step(rgb, ir, grid, score_threshold, class_mask)
        return tuple(outputs[name] for name in OUTPUT_NAMES if name in outputs)


def example_inputs(step: FrameStep) -> dict[str, np.ndarray]:
    """Inputs of the exported graph for ``step``'s layout: a mid-grey frame, a ramp IR,
    the identity registration, threshold 0 and every class allowed."""
    layout, letterbox = step.layout, step.letterbox
    height, width = layout.rgb_shape
    inputs = {"rgb": np.full((height, width, 3), 128, np.uint8)}
    ir_shape = layout.ir_shape or (1, 1)
    inputs["ir"] = np.linspace(0, 255, ir_shape[0] * ir_shape[1],
                               dtype=np.float32).reshape(ir_shape).round()
    ys, xs = np.meshgrid(np.linspace(-1, 1, letterbox.in_h, dtype=np.float32),
                         np.linspace(-1, 1, letterbox.in_w, dtype=np.float32), indexing="ij")
    inputs["grid"] = np.stack([xs, ys], axis=-1)[None]
    inputs["score_threshold"] = np.array(0.0, np.float32)
    inputs["class_mask"] = np.ones(_num_classes(step), bool)
    return inputs


def output_names(step: FrameStep) -> list[str]:
    """The outputs ``step``'s model produces, in export order."""
    names = []
    if step.config.detection:
        names += ["boxes", "scores", "labels", "keep"]
    if step.config.segmentation:
        names.append("class_map")
    if step.config.sod:
        names.append("saliency")
    return names


def export_key(step: FrameStep) -> str:
    """A name for ``step``'s export that changes with the weights, the config, the layout,
    the step's options, torch and this exporter."""
    digest = hashlib.sha256()
    digest.update(state_fingerprint(step.model.state_dict()).encode())
    digest.update(json.dumps(step.config.to_dict(), sort_keys=True).encode())
    digest.update(repr((step.layout, step.max_detections, step.gain_in_graph, torch.__version__,
                        EXPORT_VERSION, OPSET)).encode())
    return digest.hexdigest()[:20]


def export_onnx(step: FrameStep, path: str | Path, source: str = "") -> Path:
    """Export ``step`` (on the CPU, fp32) to ``path`` with metadata; returns the path.

    Written to a temporary name and renamed, so a crash never leaves a half file that a
    later start would load.
    """
    _onnx()  # the metadata is written with it: fail before the slow export, not after
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _ExportedStep(step).eval()
    inputs = example_inputs(step)
    args = tuple(torch.from_numpy(inputs[name]) for name in INPUT_NAMES)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    start = time.perf_counter()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes: expected
        torch.onnx.export(module, args, str(temporary), input_names=list(INPUT_NAMES),
                          output_names=output_names(step), opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    _write_metadata(temporary, step, source)
    temporary.replace(path)
    LOG.info("exported %s (%s) in %.1f s", path, step.layout.describe(),
             time.perf_counter() - start)
    return path


def _onnx() -> ModuleType:
    """The ``onnx`` package, or `BackendUnavailable` saying how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable(
            f"exporting to ONNX needs the Python package 'onnx', which is not installed "
            f"({exc}): pip install 'onnx' (every exported back-end's extra has it, e.g. "
            f"pip install 'ivtuning_ros[openvino]'), or use backend 'torch'") from None
    return onnx


def _write_metadata(path: Path, step: FrameStep, source: str) -> None:
    onnx = _onnx()
    model = onnx.load(str(path))
    layout = step.layout
    metadata = {
        "ivtuning.config": json.dumps(step.config.to_dict()),
        "ivtuning.config_name": step.config.name,
        "ivtuning.detection_classes": json.dumps(
            list(step.config.detection.classes) if step.config.detection else []),
        "ivtuning.segmentation_classes": json.dumps(
            list(step.config.segmentation.classes) if step.config.segmentation else []),
        "ivtuning.layout": json.dumps({"rgb_shape": layout.rgb_shape, "ir_shape": layout.ir_shape,
                                       "ir_dtype": layout.ir_dtype, "bgr": layout.bgr}),
        "ivtuning.input_size": json.dumps([step.config.input.height, step.config.input.width]),
        "ivtuning.opset": str(OPSET),
        "ivtuning.export_version": str(EXPORT_VERSION),
        "ivtuning.torch": torch.__version__,
        "ivtuning.weights_fingerprint": state_fingerprint(step.model.state_dict()),
        "ivtuning.source": source,
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``ivtuning.*`` metadata of an exported file."""
    model = _onnx().load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in model.metadata_props}


def cached_export(step: FrameStep, cache_dir: Path, source: str = "") -> Path:
    """The ONNX file of ``step`` in ``cache_dir``, exported on first use."""
    path = Path(cache_dir) / "onnx" / f"{export_key(step)}.onnx"
    if not path.is_file():
        LOG.warning("exporting %s for %s to ONNX (once; kept in %s)", step.config.name,
                    step.layout.describe(), path.parent)
        export_onnx(step, path, source)
    return path


def _num_classes(step: FrameStep) -> int:
    return max(len(step.config.detection.classes) if step.config.detection else 0, 1)
