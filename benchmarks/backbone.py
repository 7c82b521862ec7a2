"""The prompter's price: IV-tuning backbone vs the frozen backbone alone vs the dual-branch design.

Three backbones on the same weights, at one input size, eval mode, fp32, under
``torch.inference_mode()``, for any config (Swin or plain ViT; a ViT's feature pyramid
runs in all three):

* ``frozen``: the frozen backbone on RGB alone (``AdaptedBackbone.forward_frozen``);
* ``iv_tuning``: the frozen backbone with infrared prompts on RGB + IR, the prompter
  holding random non-zero ("trained-looking") weights, so nothing can be skipped;
* ``dual_branch``: the design IV-tuning replaces: the frozen backbone on RGB, again on IR,
  features summed (`ivtuning_ros.runtime.benchmark.DualBranchBaseline`, without heads).

After a warm-up, the three run interleaved (one of each per repeat), so that machine
load affects them alike; reports median and p90 latency, GFLOPs counted by
`torch.utils.flop_counter.FlopCounterMode`, and the ratios IV-tuning/frozen (target
<= 1.22) and IV-tuning/dual (target <= 0.62), in time and in FLOPs. Prints one JSON
object on stdout.

    .venv/bin/python benchmarks/backbone.py --repeats 15
    .venv/bin/python benchmarks/backbone.py --config models/ivt_dinov3_s_realtime.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ivtuning_ros.model import AdaptedBackbone, build_backbone, load_config
from ivtuning_ros.runtime.benchmark import DualBranchBaseline, device_name

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"iv_tuning_vs_frozen": 1.22, "iv_tuning_vs_dual": 0.62}


def trained_looking(backbone: AdaptedBackbone, seed: int = 0) -> AdaptedBackbone:
    """Perturb every trainable tensor around its initial value (s3/s4 no longer zero) and
    give BatchNorm running statistics, as a trained prompter would have."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in backbone.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
        for name, buffer in backbone.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5, generator=generator)
            elif name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1, generator=generator)
    return backbone


class FeaturesOnly(nn.Module):
    """The model interface `DualBranchBaseline` reads, without heads: its ``heads``
    return the summed stage features, so the benchmark times the backbones alone."""

    def __init__(self, backbone: AdaptedBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def heads(self, features: list[Tensor], input_size: tuple[int, int], **_: object) -> dict:
        """The summed features, whatever options the heads would take."""
        return {"features": features}


def variants(backbone: AdaptedBackbone, rgb: Tensor,
             ir: Tensor) -> dict[str, Callable[[], object]]:
    """The three compared forwards, as closures over the same inputs and weights."""
    dual = DualBranchBaseline(FeaturesOnly(backbone))
    return {
        "frozen": lambda: backbone.forward_frozen(rgb),
        "iv_tuning": lambda: backbone(rgb, ir),
        "dual_branch": lambda: dual(rgb, ir),
    }


def gflops(run: Callable[[], object]) -> float:
    """Floating-point operations of one call (a multiply-add counts 2), in billions."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 1e9


def time_interleaved(runs: dict[str, Callable[[], object]], repeats: int,
                     warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each run; one call of each per repeat, in turn."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(warmup + repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if step >= warmup:
                samples[name].append(1000 * (time.perf_counter() - start))
    return samples


def summarise(samples: dict[str, list[float]], flops: dict[str, float]) -> dict:
    """Median and p90 per variant, and the two ratios in time (medians) and in FLOPs."""
    latency = {}
    for name, values in samples.items():
        median, p90 = np.percentile(values, [50, 90])
        latency[name] = {"median": round(float(median), 2), "p90": round(float(p90), 2)}
    ratios = {}
    for key, baseline in (("iv_tuning_vs_frozen", "frozen"), ("iv_tuning_vs_dual", "dual_branch")):
        by = {"time": latency["iv_tuning"]["median"] / latency[baseline]["median"],
              "flops": flops["iv_tuning"] / flops[baseline]}
        ratios[key] = {**{k: round(v, 3) for k, v in by.items()}, "target": TARGETS[key],
                       "meets_target": {k: v <= TARGETS[key] for k, v in by.items()}}
    return {"latency_ms": latency, "gflops": flops, "ratios": ratios}


def benchmark(config_path: Path, height: int, width: int, repeats: int,
              warmup: int = 2) -> dict:
    """The report: latency (median, p90 ms), GFLOPs and the ratios against their targets."""
    config = load_config(config_path)
    torch.manual_seed(0)
    backbone = trained_looking(build_backbone(config, load_weights=False).eval())
    generator = torch.Generator().manual_seed(1)
    rgb = torch.randn(1, 3, height, width, generator=generator)
    ir = torch.randn(1, config.prompter.ir_in_channels, height, width, generator=generator)
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        runs = variants(backbone, rgb, ir)
        flops = {name: round(gflops(run), 3) for name, run in runs.items()}
        samples = time_interleaved(runs, repeats, warmup)
    return {
        "config": config.name,
        "device": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "input": [height, width],
        "precision": "fp32",
        "repeats": repeats,
        "warmup": warmup,
        # Other processes on a shared machine slow many-small-op models most: read the
        # ratios against the load the run saw (1-minute load average, before and after).
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **summarise(samples, flops),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "models" / "ivt_swin_t.yaml")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = benchmark(args.config, args.height, args.width, args.repeats, args.warmup)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
