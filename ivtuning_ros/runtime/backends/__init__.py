"""Inference back-ends for the engine: eager PyTorch, or an exported `FrameStep` run by
OpenVINO, ONNX Runtime or TensorRT.

Every exported back-end is a *runner*: ``run(inputs) -> outputs`` over the numpy
arrays named in `onnx_export`. Runtime packages are optional extras; a missing one
raises `BackendUnavailable` naming the package to install.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np
import torch

BACKENDS = ("torch", "openvino", "onnxruntime", "tensorrt")
# pip package (and the project's extra) that provides each exported back-end.
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


class BackendUnavailable(RuntimeError):
    """A back-end cannot run on this machine (package missing, wrong device)."""


class Runner(Protocol):
    """An exported step, compiled for one back-end, device and precision."""

    precision: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named input arrays -> named output arrays on the host."""


def require(module: str, backend: str) -> ModuleType:
    """Import a back-end's runtime package, or raise `BackendUnavailable` saying which
    package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = PACKAGES[backend]
        raise BackendUnavailable(
            f"backend '{backend}' needs the Python package '{package}', which is not "
            f"installed ({exc}): pip install '{package}' (or the project's extra: "
            f"pip install 'ivtuning_ros[{package}]'), or use backend 'torch'") from None


def check_backend(backend: str) -> None:
    """ValueError unless ``backend`` is a known back-end name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")


def open_runner(backend: str, onnx_path: Path, device: torch.device, precision: str | None,
                cache_dir: Path) -> Runner:
    """Compile an exported step for ``backend``; ``precision`` None: the back-end's best
    (see each runner)."""
    if backend == "openvino":
        from .openvino_runner import OpenVINORunner
        return OpenVINORunner(onnx_path, device, precision, cache_dir)
    if backend == "onnxruntime":
        from .onnxruntime_runner import OnnxRuntimeRunner
        return OnnxRuntimeRunner(onnx_path, device, precision)
    if backend == "tensorrt":
        from .tensorrt_runner import TensorRTRunner
        return TensorRTRunner(onnx_path, device, precision, cache_dir)
    raise ValueError(f"backend '{backend}' runs no exported model")


def resolve_precision(backend: str, device: torch.device, precision: str | None) -> str:
    """The precision ``backend`` will run at on ``device``; raises if it cannot."""
    if backend == "openvino":
        from .openvino_runner import openvino_precision
        return openvino_precision(device, precision)
    if backend == "onnxruntime":
        from .onnxruntime_runner import onnxruntime_precision
        return onnxruntime_precision(device, precision)
    if backend == "tensorrt":
        from .tensorrt_runner import tensorrt_precision
        return tensorrt_precision(device, precision)
    raise ValueError(f"backend '{backend}' runs no exported model")
