"""OpenVINO on the CPU. Precision: bf16 where the CPU has it (OpenVINO's own choice on
such CPUs), else fp32; fp32 is asked for explicitly, as OpenVINO would otherwise pick
bf16 silently (DEPLOY_FACTS.md). Compiled models are cached on disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..step import OUTPUT_NAMES
from . import BackendUnavailable, require
from .onnx_export import INPUT_NAMES

# OpenVINO's names for our precisions, and the CPU capability each needs.
_PRECISIONS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}


def _capabilities() -> list[str]:
    openvino = require("openvino", "openvino")
    return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_precision(device: torch.device, precision: str | None) -> str:
    """fp32, bf16 or fp16 as asked and supported; None: bf16 if the CPU has it, else fp32."""
    if device.type != "cpu":
        raise BackendUnavailable(f"backend 'openvino' runs on the CPU here; set device 'cpu' "
                                 f"(got '{device}'), or use backend 'tensorrt' on NVIDIA GPUs")
    capabilities = _capabilities()
    if precision is None:
        return "bf16" if "BF16" in capabilities else "fp32"
    if precision not in _PRECISIONS:
        raise ValueError(f"backend 'openvino' runs fp32, bf16 or fp16, got '{precision}'")
    if _PRECISIONS[precision][1] not in capabilities:
        raise BackendUnavailable(
            f"this CPU cannot run OpenVINO at {precision} (its capabilities: "
            f"{', '.join(capabilities)}); use precision fp32 or auto")
    return precision


class OpenVINORunner:
    """One compiled model and its infer request (latency hint, one stream)."""

    def __init__(self, onnx_path: Path, device: torch.device, precision: str | None,
                 cache_dir: Path) -> None:
        openvino = require("openvino", "openvino")
        self.precision = openvino_precision(device, precision)
        core = openvino.Core()
        config = {"INFERENCE_PRECISION_HINT": _PRECISIONS[self.precision][0],
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                  "INFERENCE_NUM_THREADS": str(torch.get_num_threads()),
                  "CACHE_DIR": str(Path(cache_dir) / "openvino")}
        compiled = core.compile_model(str(onnx_path), "CPU", config)
        self._request = compiled.create_infer_request()
        self._inputs = [_graph_name(port, INPUT_NAMES) for port in compiled.inputs]
        self._outputs = [(_graph_name(port, OUTPUT_NAMES), port) for port in compiled.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._request.infer({name: inputs[name] for name in self._inputs})
        return {name: np.array(results[port]) for name, port in self._outputs}


def _graph_name(port, names: tuple[str, ...]) -> str:
    """The export's name of a port: OpenVINO may give a port several tensor names (an
    input that feeds a no-op cast keeps the cast's output name too)."""
    found = sorted(set(port.get_names()) & set(names))
    if not found:
        raise ValueError(f"an OpenVINO port named {sorted(port.get_names())} is none of "
                         f"{names}: not an ivtuning export")
    return found[0]
