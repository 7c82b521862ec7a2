"""Model benchmark behind `ivtuning bench`: per-component latency, measured side by side.

Every repeat times each component once, in turn, on the same inputs, so machine
load affects them alike; the report gives p50/p95/p99 per component.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from .model import IVTuningModel, ModelConfig


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentiles(samples: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def model_components(model: IVTuningModel, rgb: torch.Tensor,
                     ir: torch.Tensor | None) -> dict[str, Callable[[], object]]:
    """Named closures, one per model component, each fed the real upstream output."""
    features = model.backbone(rgb, ir).features
    components: dict[str, Callable[[], object]] = {
        "backbone": lambda: model.backbone(rgb, ir),
        "backbone_frozen_only": lambda: model.backbone.forward_frozen(rgb),
    }
    head = model.detection
    if head is not None:
        memory, shapes = head.encode(features)
        query, reference, enc = head.select_queries(memory, shapes)
        components["neck_encoder"] = lambda: head.encode(features)
        components["query_selection"] = lambda: head.select_queries(memory, shapes)
        components["decoder"] = lambda: head.predict(*head.decode(query, reference, memory,
                                                                  shapes), enc)
    if model.segmentation is not None:
        size = tuple(rgb.shape[-2:])
        components["segmentation_head"] = lambda: model.segmentation(features, size)
    components["model_forward"] = lambda: model(rgb, ir)
    return components


def bench_model(model: IVTuningModel, config: ModelConfig, device: torch.device,
                repeats: int = 10, warmup: int = 2, progress: Callable | None = None) -> dict:
    """Time every component of ``model`` at the config's input size; return the report."""
    height, width = config.input.height, config.input.width
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randn(1, 3, height, width, generator=generator).to(device)
    ir = torch.randn(1, config.prompter.ir_in_channels, height, width,
                     generator=generator).to(device)
    model = model.eval().to(device)
    with torch.inference_mode():
        components = model_components(model, rgb, ir)
        samples: dict[str, list[float]] = {name: [] for name in components}
        for step in range(warmup + repeats):
            for name, run in components.items():
                _synchronize(device)
                start = time.perf_counter()
                run()
                _synchronize(device)
                if step >= warmup:
                    samples[name].append(1000 * (time.perf_counter() - start))
            if progress is not None:
                progress()
    report = {name: _percentiles(values) for name, values in samples.items()}
    backbone, frozen = report["backbone"]["p50"], report["backbone_frozen_only"]["p50"]
    return {
        "config": config.name,
        "device": device_name(device),
        "torch": torch.__version__,
        "input": [height, width],
        "repeats": repeats,
        "latency_ms": report,
        "prompter_share_of_backbone": round(1 - frozen / backbone, 3),
    }
