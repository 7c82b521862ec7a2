"""Whether an exported back-end computes what eager PyTorch does, checked on a probe frame
before a TensorRT engine is trusted (some TensorRT releases miscompile `grid_sample`-based
deformable attention silently)."""
from __future__ import annotations

import numpy as np
import torch

from ..step import FrameStep
from . import BackendUnavailable, Runner
from .onnx_export import example_inputs

# fp16 engines differ from fp32 in the last digits; a miscompilation differs by far more.
MAX_SCORE_DIFF = 0.05
MIN_SEGMENTATION_AGREEMENT = 0.98
MAX_SALIENCY_DIFF = 8  # of 255: fp16 rounding moves a saliency by a few levels at most


def probe_inputs(step: FrameStep, gain_in_graph: bool) -> dict[str, np.ndarray]:
    """A fixed random frame pair in ``step``'s layout, as the exported graph takes it."""
    rng = np.random.default_rng(0)
    inputs = example_inputs(step)
    inputs["rgb"] = rng.integers(0, 256, inputs["rgb"].shape, dtype=np.uint8)
    inputs["ir"] = (rng.random(inputs["ir"].shape, dtype=np.float32) if not gain_in_graph
                    else rng.integers(0, 256, inputs["ir"].shape).astype(np.float32))
    return inputs


def compare(step: FrameStep, runner: Runner, inputs: dict[str, np.ndarray]) -> dict:
    """Run ``step`` (eager, fp32) and ``runner`` on the same inputs; the largest score
    difference where the top-k classes agree, segmentation pixel agreement and the largest
    saliency difference (0..255)."""
    has_ir = step.layout.ir_shape is not None
    ir = torch.from_numpy(inputs["ir"]) if has_ir else None
    if has_ir and step.gain_in_graph and step.layout.ir_dtype == "uint8":
        ir = ir.to(torch.uint8)
    with torch.inference_mode():
        expected = step(torch.from_numpy(inputs["rgb"]), ir,
                        torch.from_numpy(inputs["grid"]) if has_ir else None,
                        torch.from_numpy(inputs["score_threshold"]),
                        torch.from_numpy(inputs["class_mask"]))
    found = runner.run(inputs)
    report = {}
    if "scores" in expected:
        same = expected["labels"].numpy() == found["labels"]
        report["label_agreement"] = float(same.mean())
        report["max_score_diff"] = float(np.abs(
            expected["scores"].numpy() - found["scores"])[same].max(initial=0.0))
    if "class_map" in expected:
        report["segmentation_agreement"] = float(
            (expected["class_map"].numpy() == found["class_map"]).mean())
    if "saliency" in expected:
        report["max_saliency_diff"] = float(np.abs(
            expected["saliency"].numpy().astype(np.int16) - found["saliency"]).max())
    return report


def check(report: dict, backend: str) -> None:
    """BackendUnavailable when a `compare` report shows a back-end computing something else."""
    bad = (report.get("max_score_diff", 0.0) > MAX_SCORE_DIFF
           or report.get("label_agreement", 1.0) < 0.5
           or report.get("segmentation_agreement", 1.0) < MIN_SEGMENTATION_AGREEMENT
           or report.get("max_saliency_diff", 0.0) > MAX_SALIENCY_DIFF)
    if bad:
        raise BackendUnavailable(
            f"backend '{backend}' computes something else than PyTorch on a probe frame "
            f"({', '.join(f'{k} {v:.4g}' for k, v in report.items())}): TensorRT releases "
            "are known to miscompile grid_sample-based deformable attention; use backend "
            "'onnxruntime' (CUDA) or 'torch', or another TensorRT version")
