"""TensorRT on NVIDIA GPUs, fp16 by default.

The engine is built from the ONNX export on first use (minutes) and kept on disk,
keyed by the ONNX file, the TensorRT version, the GPU and the precision, so it is
rebuilt when any of them changes. Some TensorRT 10.x/11.x releases miscompile
`grid_sample`-based deformable attention silently (DEPLOY_FACTS.md), so a new engine
is trusted only after its outputs match PyTorch on a probe frame (`parity`, run by the
engine); the verdict is kept beside the plan file.

TensorRT's TopK takes at most 3840 elements, fewer than the IR gain control sorts, so
this back-end's export takes the IR after gain control (`FrameStep.gain_in_graph`
False): the engine runs the gain control in PyTorch first.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from . import BackendUnavailable, require

LOG = logging.getLogger("ivtuning.tensorrt")
WORKSPACE_BYTES = 4 << 30


def tensorrt_precision(device: torch.device, precision: str | None) -> str:
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BackendUnavailable(f"backend 'tensorrt' runs on an NVIDIA GPU: set device 'cuda' "
                                 f"(got '{device}', CUDA available: "
                                 f"{torch.cuda.is_available()}), or use backend 'openvino' "
                                 "on a CPU")
    if precision not in (None, "fp16", "fp32"):
        raise ValueError(f"backend 'tensorrt' runs fp16 or fp32, got '{precision}'")
    return precision or "fp16"


def plan_key(onnx_path: Path, device: torch.device, precision: str, version: str) -> str:
    """What a built engine depends on: the ONNX bytes, TensorRT, the GPU and precision."""
    digest = hashlib.sha256(Path(onnx_path).read_bytes())
    properties = torch.cuda.get_device_properties(device)
    digest.update(f"{version}|{properties.name}|{properties.major}.{properties.minor}|"
                  f"{precision}".encode())
    return digest.hexdigest()[:20]


class TensorRTRunner:
    """A deserialised engine with device buffers; inputs are copied in, outputs out."""

    def __init__(self, onnx_path: Path, device: torch.device, precision: str | None,
                 cache_dir: Path) -> None:
        self._trt = require("tensorrt", "tensorrt")
        self.precision = tensorrt_precision(device, precision)
        self.device = device
        key = plan_key(onnx_path, device, self.precision, self._trt.__version__)
        self.plan_path = Path(cache_dir) / "tensorrt" / f"{key}.plan"
        if not self.plan_path.is_file():
            self._build(onnx_path)
        logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._engine = self._trt.Runtime(logger).deserialize_cuda_engine(
            self.plan_path.read_bytes())
        self._context = self._engine.create_execution_context()
        self._inputs, self._outputs = {}, {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            dtype = torch.from_numpy(np.zeros(0, self._trt.nptype(
                self._engine.get_tensor_dtype(name)))).dtype
            buffer = torch.empty(tuple(self._engine.get_tensor_shape(name)), dtype=dtype,
                                 device=device)
            self._context.set_tensor_address(name, buffer.data_ptr())
            is_input = self._engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs)[name] = buffer

    @property
    def verified_path(self) -> Path:
        """Written once this engine's outputs matched PyTorch's (see `Engine`)."""
        return self.plan_path.with_suffix(".verified")

    def _build(self, onnx_path: Path) -> None:
        trt = self._trt
        LOG.warning("building a TensorRT %s engine from %s: this takes minutes, once per "
                    "model, frame layout, GPU and TensorRT version (kept in %s)",
                    self.precision, onnx_path.name, self.plan_path.parent)
        start = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"TensorRT {trt.__version__} cannot parse {onnx_path}: "
                                     f"{errors}; use backend 'onnxruntime' or 'torch'")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} failed to build an engine "
                                     f"from {onnx_path} (see its log above); use backend "
                                     "'onnxruntime' or 'torch'")
        self.plan_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.plan_path.with_suffix(".tmp")
        temporary.write_bytes(bytes(plan))
        temporary.replace(self.plan_path)
        LOG.warning("built the TensorRT engine in %.0f s: %s", time.perf_counter() - start,
                    self.plan_path)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, buffer in self._inputs.items():
            buffer.copy_(torch.from_numpy(np.ascontiguousarray(inputs[name])))
        stream = torch.cuda.current_stream(self.device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see its log)")
        stream.synchronize()
        return {name: buffer.cpu().numpy() for name, buffer in self._outputs.items()}
