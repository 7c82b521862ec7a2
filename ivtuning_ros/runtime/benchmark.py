"""The benchmark behind `ivtuning bench`: model components and engine variants, side by side.

Two parts, each interleaved so machine load affects everything alike:

* model components (backbone, frozen backbone alone, neck+encoder, query
  selection, decoder, segmentation head, whole forward) on device tensors;
* the engine from raw frames (RGB uint8 + 16-bit IR at the config's input size)
  to results, per stage and end to end, for several variants: precision and
  CUDA graphs (on CUDA: eager fp32, AMP, AMP + graphs), and modality
  (IV-tuning, RGB-only, a dual-branch baseline running the frozen Swin twice).

Reports p50/p95/p99 latency, throughput and peak memory as one dict (JSON).

`bench_backends` compares inference back-ends (eager torch, OpenVINO, ONNX Runtime,
TensorRT) end to end on synthetic scenes, with their parity against torch fp32.
"""
from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor, nn

from ..data.synthetic import CONDITIONS, make_scene
from ..model import IVTuningModel, ModelConfig
from .backends import check_backend
from .engine import Detections, Engine, EngineOptions


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_percentiles(samples: list[float]) -> dict[str, float]:
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
        memory, levels = head.encode(features)
        query, reference, enc = head.select_queries(memory, levels)
        components["neck_encoder"] = lambda: head.encode(features)
        components["query_selection"] = lambda: head.select_queries(memory, levels)
        components["decoder"] = lambda: head.predict(*head.decode(query, reference, memory,
                                                                  levels), enc)
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
    report = {name: latency_percentiles(values) for name, values in samples.items()}
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


class DualBranchBaseline(nn.Module):
    """Latency stand-in for the dual-branch design IV-tuning replaces (paper Table VI):
    the frozen Swin runs on RGB and again on IR, features are summed, the heads follow."""

    def __init__(self, model: IVTuningModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, rgb: Tensor, ir: Tensor | None = None,
                valid_sizes: Tensor | None = None) -> dict:
        backbone = self.model.backbone
        features = backbone.forward_frozen(rgb)
        if ir is not None:
            ir_features = backbone.forward_frozen(ir[:, :1].expand(-1, 3, -1, -1))
            features = [a + b for a, b in zip(features, ir_features, strict=True)]
        return {**self.model.heads(features, tuple(rgb.shape[-2:]), valid_sizes=valid_sizes),
                "ir_used": ir is not None}


def engine_variants(model: IVTuningModel, config: ModelConfig,
                    options: EngineOptions) -> dict[str, tuple[Engine, bool]]:
    """Named (engine, feed IR) pairs to compare; all share the model's weights."""
    variants: dict[str, tuple[Engine, bool]] = {}
    if options.device.startswith("cuda"):
        for name, precision, graphs in (("eager_fp32", "fp32", False),
                                        ("eager_amp", options.precision or "fp16", False),
                                        ("amp_graphs", options.precision or "fp16", True)):
            variants[name] = (Engine(model, config, replace(options, precision=precision,
                                                            cuda_graphs=graphs)), True)
    variants["iv_tuning"] = (Engine(model, config, options), True)
    variants["rgb_only"] = (variants["iv_tuning"][0], False)
    variants["dual_branch"] = (Engine(DualBranchBaseline(model), config, options), True)
    return variants


def bench_engine(model: IVTuningModel, config: ModelConfig, options: EngineOptions,
                 frames: int = 10, warmup: int = 2, progress: Callable | None = None) -> dict:
    """Raw frames -> results for every variant of `engine_variants`, interleaved per frame."""
    height, width = config.input.height, config.input.width
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ir = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    variants = engine_variants(model, config, options)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    peak_mb: dict[str, float] = {}
    device = torch.device(options.device)
    for step in range(warmup + frames):
        for name, (engine, feed_ir) in variants.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result = engine.infer(rgb, ir if feed_ir else None)
            if device.type == "cuda":
                peak_mb[name] = max(peak_mb.get(name, 0.0),
                                    torch.cuda.max_memory_allocated(device) / 2**20)
            if step >= warmup:
                for stage, value in result.timings_ms.items():
                    samples[name].setdefault(stage, []).append(value)
        if progress is not None:
            progress()
    report = {}
    for name, stages in samples.items():
        entry = {"latency_ms": {stage: latency_percentiles(v) for stage, v in stages.items()},
                 "throughput_fps": round(1000 / float(np.mean(stages["total"])), 2)}
        if name in peak_mb:
            entry["peak_gpu_memory_mb"] = round(peak_mb[name], 1)
        report[name] = entry
    eager = report["iv_tuning"]["latency_ms"]
    if "model" in eager:
        overhead = eager["preprocess"]["p50"] + eager["postprocess"]["p50"]
        report["pre_post_share_of_model"] = round(overhead / eager["model"]["p50"], 4)
    if "eager_fp32" in report:
        report["speedup_amp_graphs_vs_eager_fp32"] = round(
            report["eager_fp32"]["latency_ms"]["total"]["p50"]
            / report["amp_graphs"]["latency_ms"]["total"]["p50"], 2)
    # ru_maxrss is in KiB on Linux: the whole process's peak, all variants together.
    report["peak_host_memory_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def parse_backend(spec: str) -> tuple[str, str | None]:
    """``openvino`` or ``openvino:bf16`` -> (back-end, precision or None for its best)."""
    backend, _, precision = spec.partition(":")
    check_backend(backend)
    return backend, precision or None


def synthetic_frames(config: ModelConfig, count: int) -> list:
    """``count`` synthetic scenes (day, night, fog in turn) at the config's input size."""
    size = (config.input.height, config.input.width)
    return [make_scene(seed=index, condition=CONDITIONS[index % len(CONDITIONS)],
                       rgb_size=size, ir_size=size) for index in range(count)]


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_backends(model: IVTuningModel, config: ModelConfig, specs: list[str],
                   scenes: list, repeats: int = 5, warmup: int = 1,
                   score_threshold: float = 0.3, cache_dir: str | None = None,
                   device: str = "cpu", progress: Callable | None = None) -> dict:
    """End-to-end latency of each back-end on the same frames, interleaved, and its parity
    against eager torch fp32 (the reference, always run first) on ``device``.

    Per back-end: set-up time (export and compile on a cold cache), p50/p99 latency and
    throughput from raw frames to results, host memory it added, and parity on every scene:
    detections identical after the threshold (same count and classes, boxes within
    `IDENTICAL_BOX_PX`), the largest score and box differences over the top
    ``max_detections`` at threshold 0 where the classes agree, and segmentation pixel
    agreement.
    """
    options = EngineOptions(device=device, score_threshold=score_threshold, cache_dir=cache_dir)
    engines: dict[str, Engine] = {}
    report: dict[str, dict] = {}
    for spec in ["torch:fp32", *[s for s in specs if s != "torch:fp32"]]:
        backend, precision = parse_backend(spec)
        rss = _rss_mb()
        start = time.perf_counter()
        engine = Engine(model, config, replace(options, backend=backend, precision=precision))
        engine.infer(scenes[0].rgb, scenes[0].ir, scenes[0].homography)
        name = f"{backend}_{engine.precision}"
        engines[name] = engine
        report[name] = {"setup_s": round(time.perf_counter() - start, 2),
                        "host_memory_added_mb": round(_rss_mb() - rss, 1)}
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for step in range(warmup + repeats):
        for scene in scenes:
            for name, engine in engines.items():
                result = engine.infer(scene.rgb, scene.ir, scene.homography)
                if step >= warmup:
                    samples[name].append(result.timings_ms["total"])
        if progress is not None:
            progress()
    reference_name = next(iter(engines))
    for name, engine in engines.items():
        latency = latency_percentiles(samples[name])
        report[name].update(latency_ms={"p50": latency["p50"], "p99": latency["p99"]},
                            throughput_fps=round(1000 / float(np.mean(samples[name])), 2),
                            speedup_vs_torch_fp32=round(
                                np.median(samples[reference_name]) / np.median(samples[name]),
                                2),
                            parity=parity_report(engines[reference_name], engine, scenes,
                                           score_threshold))
    report["peak_host_memory_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


IDENTICAL_BOX_PX = 0.5


def parity_report(reference: Engine, engine: Engine, scenes: list, score_threshold: float) -> dict:
    identical, score_diff, box_diff, agreement, pixels = 0, 0.0, 0.0, 0, 0
    for scene in scenes:
        frame = (scene.rgb, scene.ir, scene.homography)
        expected, found = reference.infer(*frame), engine.infer(*frame)
        if expected.detections is not None:
            identical += _same_detections(expected.detections, found.detections)
            for each in (reference, engine):
                each.set_score_threshold(0.0)
            expected_all, found_all = reference.infer(*frame), engine.infer(*frame)
            for each in (reference, engine):
                each.set_score_threshold(score_threshold)
            same = expected_all.detections.labels == found_all.detections.labels
            score_diff = max(score_diff, float(np.abs(
                expected_all.detections.scores - found_all.detections.scores)[same].max(
                    initial=0.0)))
            box_diff = max(box_diff, float(np.abs(
                expected_all.detections.boxes - found_all.detections.boxes)[same].max(
                    initial=0.0)))
        if expected.class_map is not None:
            agreement += int((expected.class_map == found.class_map).sum())
            pixels += expected.class_map.size
    parity = {"scenes": len(scenes)}
    if reference.class_names:
        parity.update(identical_detections=identical, max_abs_score_diff=score_diff,
                      max_abs_box_diff_px=box_diff)
    if pixels:
        parity["segmentation_agreement"] = round(agreement / pixels, 5)
    return parity


def _same_detections(expected: Detections, found: Detections) -> bool:
    """Same count and classes in the same order, boxes within `IDENTICAL_BOX_PX`."""
    return (len(expected.labels) == len(found.labels)
            and bool(np.array_equal(expected.labels, found.labels))
            and bool(np.all(np.abs(expected.boxes - found.boxes) <= IDENTICAL_BOX_PX)))
