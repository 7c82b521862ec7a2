"""ONNX Runtime: the CPU execution provider, or CUDA's on NVIDIA GPUs; fp32 only (the
export is fp32, and ONNX Runtime has no automatic mixed precision)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import BackendUnavailable, require


def onnxruntime_precision(device: torch.device, precision: str | None) -> str:
    if precision not in (None, "fp32"):
        raise ValueError(f"backend 'onnxruntime' runs fp32 only, got '{precision}'; use "
                         "backend 'openvino' (bf16 on CPUs) or 'tensorrt' (fp16 on GPUs)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend 'onnxruntime' runs on 'cpu' or 'cuda', got '{device}'")
    return "fp32"


class OnnxRuntimeRunner:
    """One inference session on the device's execution provider."""

    def __init__(self, onnx_path: Path, device: torch.device, precision: str | None) -> None:
        onnxruntime = require("onnxruntime", "onnxruntime")
        self.precision = onnxruntime_precision(device, precision)
        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        if provider not in onnxruntime.get_available_providers():
            raise BackendUnavailable(
                f"this ONNX Runtime build has no {provider} (it has "
                f"{', '.join(onnxruntime.get_available_providers())}); install "
                "'onnxruntime-gpu' for CUDA, or set device 'cpu'")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # Idle worker threads sleep instead of spinning: on a robot's CPU the node's other
        # threads (DDS, the next frame's preprocessing) and other nodes need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider_options = [{"device_id": device.index or 0}] if device.type == "cuda" else [{}]
        self._session = onnxruntime.InferenceSession(str(onnx_path), options,
                                                     providers=[provider],
                                                     provider_options=provider_options)
        self._inputs = [entry.name for entry in self._session.get_inputs()]
        self._outputs = [entry.name for entry in self._session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, {name: inputs[name] for name in self._inputs})
        return dict(zip(self._outputs, values, strict=True))
