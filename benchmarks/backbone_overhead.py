"""What the infrared prompts cost: frozen Swin alone vs IV-tuning variants, side by side.

Prints one JSON object. All variants share the same frozen Swin weights and
input, and are timed interleaved in one run so machine load affects them alike.

    python benchmarks/backbone_overhead.py --config models/ivt_swin_t.yaml --size 512 640
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from ivtuning_ros.model import build_backbone, load_config
from ivtuning_ros.model.swin import swin_stages


def frozen_swin_only(backbone):
    """The frozen Swin with torchvision's own block forward: the visible-only baseline."""
    def run(rgb, ir):
        x = backbone.swin.features[0](rgb)
        for merge, blocks in swin_stages(backbone.swin):
            x = blocks(merge(x) if merge is not None else x)
        return x
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="models/ivt_swin_t.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 640], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = load_config(args.config)
    full = build_backbone(config, load_weights=False).eval().to(device)
    alpha_only = build_backbone(load_config(args.config, ["prompter.beta_blocks=0"]),
                                load_weights=False).eval().to(device)
    alpha_only.swin = full.swin
    height, width = args.size
    rgb = torch.randn(1, 3, height, width, device=device)
    ir = torch.randn(1, config.prompter.ir_in_channels, height, width, device=device)

    variants = {
        "frozen_swin_rgb_only": (frozen_swin_only(full), ir),
        "iv_tuning_mp_alpha_only": (alpha_only, ir),
        "iv_tuning_full": (full, ir),
        "iv_tuning_full_rgb_only_mode": (full, None),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for run, ir_input in variants.values():  # warm-up
            run(rgb, ir_input)
        for _ in range(args.repeats):
            for name, (run, ir_input) in variants.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run(rgb, ir_input)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(1000 * (time.perf_counter() - start))

    baseline = statistics.median(times["frozen_swin_rgb_only"])
    report = {
        "config": config.name,
        "input": [height, width],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads)",
        "repeats": args.repeats,
        "median_ms": {name: round(statistics.median(t), 2) for name, t in times.items()},
        "min_ms": {name: round(min(t), 2) for name, t in times.items()},
        "ratio_to_frozen_swin": {name: round(statistics.median(t) / baseline, 3)
                                 for name, t in times.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
