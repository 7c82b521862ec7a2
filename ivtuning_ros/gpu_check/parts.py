"""The GPU check's measured parts, run by a worker process: ``python -m
ivtuning_ros.gpu_check.parts --events FILE --until T [--cpu-dry-run] PART=SECONDS ...``.

Each part gets a `Box` (device, sizes, deadline) and returns its report entry (README "GPU
check"): ``status`` (passed, failed, skipped), ``reason`` where not passed, ``skipped``
(``{what: why}`` for the pieces left out) and its measurements. The worker appends one JSON
line per event to the events file: ``{"start": part, "time": t, "seconds": box}`` when a
part starts and ``{"done": part, "result": {...}}`` when it ends, so the check knows where a
killed or crashed worker was. A part stops measuring early, keeping what it has, near its
deadline; after a failed part on CUDA the worker exits and the check starts a new one.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import build_model, load_checkpoint, load_config
from ..runtime import Engine, EngineOptions
from ..runtime.benchmark import (
    bench_backends,
    device_name,
    latency_percentiles,
    parity_report,
    synthetic_frames,
)
from .check import MIN_PART_S

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
DEMO_CHECKPOINT = MODELS / "ivt_demo.pth"
REALTIME_CONFIG = MODELS / "ivt_swin_t_realtime.yaml"
SWIN_L_CONFIG = MODELS / "ivt_swin_l_dino_m3fd.yaml"
TINY_CONFIG = MODELS / "ivt_tiny_test.yaml"  # stands in for every model in a dry run
SCORE_THRESHOLD = 0.3
# name -> (precision, CUDA graphs): the engine variants timed side by side.
VARIANTS = {"eager_fp32": ("fp32", False), "amp_fp16": ("fp16", False),
            "amp_bf16": ("bf16", False), "amp_fp16_graphs": ("fp16", True),
            "amp_bf16_graphs": ("bf16", True)}
# name -> (precision, CUDA graphs, identical detections required): parity against the CPU.
PARITY_VARIANTS = {"cuda_fp32_eager": ("fp32", False, True),
                   "cuda_fp32_graphs": ("fp32", True, True),
                   "cuda_fp16_graphs": ("fp16", True, False),
                   "cuda_bf16_graphs": ("bf16", True, False)}
MIB = 2**20
MAX_WARNINGS = 20
# After a failed part on CUDA the worker exits and a new one runs the rest: a CUDA error can
# leave this process's context unusable.
EXIT_AFTER_FAILURE = 3


@dataclass(frozen=True)
class Box:
    """Where and how long a part runs: ``device`` cuda (or cpu in a dry run), ``deadline``
    on `time.monotonic`, ``dry_run`` for tiny sizes and 1-2 repeats."""

    device: str
    deadline: float
    dry_run: bool

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _result(status: str, reason: str = "", **measurements) -> dict:
    entry = {"status": status, **({"reason": reason} if reason else {})}
    return {**entry, **measurements}


# Parity: the engine on CUDA against the CPU, on the demo weights ---------------------------
def parity(box: Box) -> dict:
    """Identical detections (same classes in order, boxes within 0.5 px) on synthetic scenes,
    CUDA fp32 (eager and graphs) against the CPU's fp32 engine; AMP reported beside them.
    A dry run compares a second CPU engine, the CUDA variants skipped."""
    model, config = load_checkpoint(DEMO_CHECKPOINT)
    scenes = synthetic_frames(config, 1 if box.dry_run else 3)
    reference = Engine(model, config, EngineOptions(device="cpu", precision="fp32",
                                                    score_threshold=SCORE_THRESHOLD))
    variants = PARITY_VARIANTS if box.cuda else {"cpu_fp32": ("fp32", False, True)}
    device_model = copy.deepcopy(model) if box.cuda else model  # an engine moves its model
    compared, skipped, failures = {}, {}, []
    for name, (precision, graphs, required) in variants.items():
        why = _unsupported(box, precision)
        if why:
            skipped[name] = why
            continue
        engine = Engine(device_model, config, EngineOptions(
            device=box.device, precision=precision, cuda_graphs=graphs,
            score_threshold=SCORE_THRESHOLD))
        entry = parity_report(reference, engine, scenes, SCORE_THRESHOLD)
        entry["required"] = required
        compared[name] = entry
        if required and entry["identical_detections"] != entry["scenes"]:
            failures.append(f"{name}: identical detections on {entry['identical_detections']} "
                            f"of {entry['scenes']} scenes")
    if box.dry_run:
        skipped.update({name: "needs CUDA (dry run)" for name in PARITY_VARIANTS})
    return _result("failed" if failures else "passed", "; ".join(failures),
                   checkpoint=str(DEMO_CHECKPOINT.relative_to(REPO)), reference="cpu fp32",
                   device=device_name(torch.device(box.device)), variants=compared,
                   skipped=skipped)


def _unsupported(box: Box, precision: str) -> str:
    """Why ``precision`` cannot run on the box's device, or ""."""
    if precision == "bf16" and box.cuda and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return ""


# Engine latency: eager fp32, AMP fp16 / bf16, AMP + CUDA graphs, side by side --------------
def bench(box: Box, config_path: Path, repeats: int, warmup: int) -> dict:
    """Per-frame latency of the whole step (upload, preprocessing, model, post-processing,
    download) from raw frames (RGB uint8 + 16-bit IR at the input size), the variants
    interleaved frame by frame; p50/p95/p99, stage p50s, throughput, GPU memory and the
    speed-ups over eager fp32. A dry run times the tiny model, graph variants skipped."""
    if box.dry_run:
        config_path, repeats, warmup = TINY_CONFIG, 2, 1
    config = load_config(config_path)
    model = build_model(config, load_weights=False).eval()
    height, width = config.input.height, config.input.width
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ir = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    engines, skipped = {}, {}
    allocated = _allocated(box)
    for name, (precision, graphs) in VARIANTS.items():
        why = _unsupported(box, precision) or ("CUDA graphs need CUDA" if graphs and not box.cuda
                                               else "")
        if why:
            skipped[name] = why
            continue
        engines[name] = Engine(model, config, EngineOptions(
            device=box.device, precision=precision, cuda_graphs=graphs, score_threshold=0.0))
    weights_mb = (_allocated(box) - allocated) / MIB
    samples, memory, completed = _time_interleaved(box, engines, rgb, ir, repeats, warmup)
    report = _variant_reports(samples, memory, engines, weights_mb if box.cuda else None)
    problems = [f"{name}: CUDA graph capture failed (ran eagerly)"
                for name, entry in report.items()
                if VARIANTS[name][1] and box.cuda and not entry["cuda_graph"]]
    if completed < repeats:
        problems.append(f"stopped at {completed} of {repeats} frames to stay in the time box")
    status = "failed" if completed == 0 or any("capture" in p for p in problems) else "passed"
    return _result(status, "; ".join(problems), config=config.name,
                   config_file=str(config_path.relative_to(REPO)), input=[height, width],
                   ir="uint16 at the input size", device=device_name(torch.device(box.device)),
                   torch=torch.__version__, frames=completed, warmup=warmup,
                   gpu_weights_mb=round(weights_mb, 1) if box.cuda else None,
                   variants=report, skipped=skipped)


def _allocated(box: Box) -> int:
    return torch.cuda.memory_allocated() if box.cuda else 0


def _time_interleaved(box: Box, engines: dict[str, Engine], rgb: np.ndarray, ir: np.ndarray,
                      repeats: int, warmup: int) -> tuple[dict, dict, int]:
    """Frames through every engine in turn; stops early when the next round would pass the
    deadline. Returns (timings per variant and stage, GPU memory per variant, timed frames)."""
    samples = {name: {} for name in engines}
    memory = {name: {"held": 0, "transient_peak": 0} for name in engines}
    completed, slowest = 0, 0.0
    for step in range(warmup + repeats):
        if step >= warmup and box.left() < 2 * slowest + 1.0:
            break
        started = time.monotonic()
        for name, engine in engines.items():
            before = _allocated(box)
            if box.cuda:
                torch.cuda.reset_peak_memory_stats()
            timings = engine.infer(rgb, ir).timings_ms
            if box.cuda:
                peak = torch.cuda.max_memory_allocated() - before
                memory[name]["transient_peak"] = max(memory[name]["transient_peak"], peak)
                if step == 0:  # its buffers, graph pool and caches, made on the first frame
                    memory[name]["held"] = torch.cuda.memory_allocated() - before
            if step >= warmup:
                for stage, value in timings.items():
                    samples[name].setdefault(stage, []).append(value)
        completed += step >= warmup
        slowest = max(slowest, time.monotonic() - started)
    return samples, memory, completed


def _variant_reports(samples: dict, memory: dict, engines: dict[str, Engine],
                     weights_mb: float | None) -> dict:
    report = {}
    for name, stages in samples.items():
        if not stages:
            continue
        total = latency_percentiles(stages["total"])
        entry = {"precision": engines[name].precision, "cuda_graph": "graph" in stages,
                 "frames": len(stages["total"]), "total_ms": total,
                 "stages_p50_ms": {s: round(float(np.median(v)), 3)
                                   for s, v in stages.items() if s != "total"},
                 "throughput_fps": round(1000 / float(np.mean(stages["total"])), 2)}
        if weights_mb is not None:
            held, transient = memory[name]["held"] / MIB, memory[name]["transient_peak"] / MIB
            entry["gpu_memory_mb"] = {"held": round(held, 1),
                                      "transient_peak": round(transient, 1),
                                      "alone": round(weights_mb + held + transient, 1)}
        report[name] = entry
    reference = report.get("eager_fp32", {}).get("total_ms", {}).get("p50")
    for name, entry in report.items():
        if reference:
            entry["speedup_vs_eager_fp32"] = round(reference / entry["total_ms"]["p50"], 2)
        eager = report.get(name.removesuffix("_graphs"))
        if name.endswith("_graphs") and eager:
            entry["speedup_vs_eager_amp"] = round(eager["total_ms"]["p50"]
                                                  / entry["total_ms"]["p50"], 2)
    return report


def bench_realtime(box: Box) -> dict:
    """The node's real-time model (Swin-T) at its 640x512 input."""
    return bench(box, REALTIME_CONFIG, repeats=100, warmup=5)


def bench_swin_l(box: Box) -> dict:
    """The paper's Swin-L DINO at its 1024x768 input (random weights: latency only)."""
    entry = bench(box, SWIN_L_CONFIG, repeats=30, warmup=3)
    if box.dry_run:
        entry["stands_in_for"] = SWIN_L_CONFIG.stem
    return entry


# Exported back-ends on the GPU ---------------------------------------------------------------
def onnxruntime(box: Box) -> dict:
    """ONNX Runtime's CUDA provider against torch fp32 on CUDA (the demo weights): set-up,
    latency and parity, from `bench_backends`. A dry run uses the CPU provider."""
    try:
        import onnxruntime as runtime
    except (ImportError, OSError) as exc:
        return _result("skipped", f"onnxruntime does not import here ({exc})")
    providers = runtime.get_available_providers()
    provider = "CUDAExecutionProvider" if box.cuda else "CPUExecutionProvider"
    if provider not in providers:
        return _result("skipped", f"onnxruntime {runtime.__version__} has no {provider} (it has "
                       f"{', '.join(providers)}): pip install onnxruntime-gpu to measure it",
                       providers=providers)
    return _backend(box, "onnxruntime", providers=providers, version=runtime.__version__)


def tensorrt(box: Box) -> dict:
    """TensorRT fp16 against torch fp32 on CUDA (the demo weights), where it imports: engine
    build, latency and parity."""
    try:
        import tensorrt as module
    except (ImportError, OSError) as exc:
        return _result("skipped", f"the tensorrt module does not import here ({exc})")
    if not box.cuda:
        return _result("skipped", "TensorRT needs CUDA (dry run)")
    return _backend(box, "tensorrt", version=module.__version__)


def _backend(box: Box, backend: str, **facts) -> dict:
    if box.dry_run:
        config = load_config(TINY_CONFIG)
        model, count, repeats, warmup = build_model(config).eval(), 1, 1, 0
    else:
        model, config = load_checkpoint(DEMO_CHECKPOINT)
        count, repeats, warmup = 3, 10, 2
    scenes = synthetic_frames(config, count)
    with tempfile.TemporaryDirectory(prefix="ivtuning-gpu-check-") as cache:
        report = bench_backends(model, config, [backend], scenes, repeats, warmup,
                                SCORE_THRESHOLD, cache_dir=cache, device=box.device)
    name = next(key for key in report if key.startswith(backend))
    parity_entry = report[name]["parity"]
    failures = [] if parity_entry.get("identical_detections", len(scenes)) == len(scenes) else [
        f"identical detections on {parity_entry['identical_detections']} of {len(scenes)} "
        "scenes"]
    return _result("failed" if failures else "passed", "; ".join(failures), **facts,
                   config=config.name, input=[config.input.height, config.input.width],
                   device=device_name(torch.device(box.device)), scenes=len(scenes),
                   repeats=repeats, results=report)


PARTS: dict[str, Callable[[Box], dict]] = {
    "parity": parity, "bench_realtime": bench_realtime, "bench_swin_l": bench_swin_l,
    "onnxruntime": onnxruntime, "tensorrt": tensorrt}


class Collected(logging.Handler):
    """Log records and Python warnings of the running part (e.g. a failed CUDA graph
    capture), for its report entry."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.name}: {record.getMessage()}".splitlines()[0][:300]
        if line not in self.lines and len(self.lines) < MAX_WARNINGS:
            self.lines.append(line)


def run_part(name: str, box: Box) -> dict:
    """One part; an exception is its failure, reported as one line plus a traceback tail."""
    started = time.monotonic()
    collected = Collected()
    logging.getLogger().addHandler(collected)
    try:
        entry = PARTS[name](box)
    except Exception as exc:  # a part's failure must not stop the others
        lines = traceback.format_exc().strip().splitlines()
        entry = _result("failed", f"{type(exc).__name__}: {exc}".splitlines()[0],
                        traceback_tail=lines[-12:])
    finally:
        logging.getLogger().removeHandler(collected)
        gc.collect()
        if box.cuda:
            torch.cuda.empty_cache()
    if collected.lines:
        entry["warnings"] = collected.lines
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", required=True, type=Path, help="JSON lines appended here")
    parser.add_argument("--until", type=float, required=True,
                        help="time.time() by which every part must be done")
    parser.add_argument("--cpu-dry-run", action="store_true")
    parser.add_argument("parts", nargs="+", metavar="PART=SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.captureWarnings(True)
    device = "cpu" if args.cpu_dry_run else "cuda"
    for spec in args.parts:
        name, _, seconds = spec.partition("=")
        seconds = min(float(seconds), args.until - time.time())
        if seconds < MIN_PART_S:
            _append(args.events, {"done": name, "result": _result(
                "skipped", f"{max(seconds, 0):.0f} s of the check's budget left", seconds=0.0)})
            continue
        _append(args.events, {"start": name, "time": time.time(), "seconds": seconds})
        box = Box(device, time.monotonic() + seconds, args.cpu_dry_run)
        entry = run_part(name, box)
        _append(args.events, {"done": name, "result": entry})
        if entry["status"] == "failed" and box.cuda:
            return EXIT_AFTER_FAILURE
    return 0


def _append(path: Path, event: dict) -> None:
    with path.open("a") as events:
        events.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
