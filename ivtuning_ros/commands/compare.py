"""`ivtuning compare`: IV-tuning, CPAL and DRA side by side on one frozen backbone.

Each method starts from the same visible-pre-trained small model (the demo recipe's first
stage: its Swin frozen, its heads as the starting point), trains with the same budget,
seed and synthetic RGB-IR scenes, and is evaluated with and without IR on held-out night,
fog and day scenes. DRA first learns its IR modality LoRA without labels (its stage 1,
counted in its training time). Costs are measured on the Swin-T real-time config at
640x512 (random weights: cost does not depend on them). This measures mechanisms on
synthetic data, not the papers' numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data.datasets import open_dataset
from ..evaluation.evaluate import evaluate
from ..hub.cache import resolve
from ..model import ModelConfig, build_model, load_config, model_summary
from ..model.adapters.dra.modality_file import load_modality_file
from ..model.checkpoint import export_base, load_checkpoint_as
from ..runtime import Engine, EngineOptions
from ..train.batch import Augmentation
from ..train.loop import TrainOptions, train
from ..train.modality import ModalityOptions, pretrain_modality

METHODS = ("ivtuning", "cpal", "dra")
CONDITIONS = ("night", "fog", "day")
SCENE_SCALE = 0.5  # the demo recipe's synthetic camera resolution


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="train and evaluate IV-tuning, CPAL and "
                                   "DRA side by side on one frozen backbone")
    parser.add_argument("--init", default="out/demo_train/visible/last.pth",
                        help="visible-pre-trained full checkpoint every method starts from "
                             "(`make demo-weights` writes it; default %(default)s)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=300, help="task training steps")
    parser.add_argument("--modality-steps", type=int, default=150,
                        help="DRA stage 1 steps (unlabelled IR)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--train-scenes", type=int, default=400)
    parser.add_argument("--eval-scenes", type=int, default=60, help="per condition")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--cost-config", default="models/ivt_swin_t_realtime.yaml",
                        help="config whose size the costs are measured at")
    parser.add_argument("--out", default="out/compare")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run_compare_command)
    return parser


def run_compare_command(args: argparse.Namespace) -> int:
    if not Path(resolve(args.init)).is_file():  # a weights name: its cache file, or NotCached
        raise FileNotFoundError(f"'{args.init}' does not exist: run `make demo-weights` (its "
                                "visible pre-training stage writes it) or pass --init")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for method in args.methods:
        rows[method] = _run_method(method, args, out / method)
        (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
        if not args.quiet:
            print(f"{method}: done in {rows[method]['training_s']:.0f} s training")
    report = {"init": args.init, "steps": args.steps, "modality_steps": args.modality_steps,
              "batch_size": args.batch_size, "seed": args.seed,
              "eval_scenes_per_condition": args.eval_scenes, "methods": rows}
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "compare.md").write_text(markdown_table(rows) + "\n")
    plot_comparison(rows, out / "compare.png")
    print(markdown_table(rows))
    print(f"wrote {out / 'compare.json'}, compare.md, compare.png")
    return 0


def _run_method(method: str, args: argparse.Namespace, out: Path) -> dict:
    torch.manual_seed(args.seed)
    # Every method takes the visible model's frozen Swin, output norms and heads.
    model, config = load_checkpoint_as(args.init, [f"method={method}"])
    export_base(model, config, out)
    train_data = open_dataset("synthetic", length=args.train_scenes, seed=args.seed,
                              rgb_size=(240, 320), ir_size=(256, 320))
    start = time.perf_counter()
    if method == "dra":
        pretrain_modality(model, config, train_data, out,
                          ModalityOptions(steps=args.modality_steps, batch_size=args.batch_size,
                                          seed=args.seed),
                          data_name="synthetic IR", progress=not args.quiet)
        config.dra.modality_lora = str(out / "modality.pth")
        load_modality_file(model.backbone, config, config.dra.modality_lora)
    options = TrainOptions(iterations=args.steps, batch_size=args.batch_size, lr=args.lr,
                           warmup_steps=30, seed=args.seed, augmentation=Augmentation(),
                           out_dir=str(out))
    train(model, config, train_data, options, torch.device("cpu"), progress=not args.quiet)
    training_s = time.perf_counter() - start
    summary = model_summary(model)
    storage = (out / "last.pth").stat().st_size
    row = {
        "trainable_backbone_params": summary["backbone_trainable_params"],
        "trainable_params": summary["trainable_params"],
        "frozen_params": summary["backbone_frozen_params"] + summary["reusable_frozen_params"],
        "task_file_mb": round(storage / 2**20, 2),
        "shared_modality_file_mb": (round((out / "modality.pth").stat().st_size / 2**20, 2)
                                    if method == "dra" else 0.0),
        "training_s": round(training_s, 1),
        **_costs(method, args.cost_config),
        "eval": _evaluate(model.eval(), config, args.eval_scenes, not args.quiet),
    }
    return row


def _evaluate(model, config: ModelConfig, scenes: int, progress: bool) -> dict:
    engine = Engine(model, config, EngineOptions(device="cpu", score_threshold=0.001,
                                                 max_detections=100))
    results = {}
    for condition in CONDITIONS:
        data = open_dataset("synthetic", length=scenes, seed=7, conditions=(condition,),
                            rgb_size=(240, 320), ir_size=(256, 320))
        for mode, use_ir in (("rgb_ir", True), ("rgb_only", False)):
            report = evaluate(engine, data, progress=progress, use_ir=use_ir)
            results[f"{condition}_{mode}"] = {
                "mAP": round(report["detection"]["mAP"], 4),
                "mIoU": round(report["segmentation"]["mIoU"], 4)}
    return results


def _costs(method: str, config_path: str) -> dict:
    """GFLOPs and CPU latency (median of 3) of the whole model at the config's size."""
    config = load_config(config_path, [f"method={method}"])
    # No parameter requires grad: FlopCounterMode's module hooks then stay out of autograd.
    model = build_model(config, load_weights=False).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randn(1, 3, config.input.height, config.input.width, generator=generator)
    ir = torch.randn(1, 1, config.input.height, config.input.width, generator=generator)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(rgb, ir)
    with torch.inference_mode():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model(rgb, ir)
            times.append(time.perf_counter() - start)
    return {"cost_config": config.name, "gflops": round(counter.get_total_flops() / 1e9, 1),
            "cpu_ms": round(1000 * float(np.median(times)), 0)}


def markdown_table(rows: dict) -> str:
    """One row per method: sizes, costs, training time and the six accuracy cells."""
    cells = [f"{c} {'IR' if m == 'rgb_ir' else 'RGB'}" for c in CONDITIONS
             for m in ("rgb_ir", "rgb_only")]
    header = ["method", "#TP backbone", "trainable", "frozen", "task file MiB", "GFLOPs",
              "CPU ms", "train s", *[f"mAP {c}" for c in cells], *[f"mIoU {c}" for c in cells]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method, row in rows.items():
        evals = [row["eval"][f"{c}_{m}"] for c in CONDITIONS for m in ("rgb_ir", "rgb_only")]
        storage = f"{row['task_file_mb']}" + (
            f" (+{row['shared_modality_file_mb']} shared)" if row["shared_modality_file_mb"]
            else "")
        values = [method, f"{row['trainable_backbone_params']:,}", f"{row['trainable_params']:,}",
                  f"{row['frozen_params']:,}", storage, f"{row['gflops']}", f"{row['cpu_ms']:.0f}",
                  f"{row['training_s']:.0f}", *[f"{e['mAP']:.3f}" for e in evals],
                  *[f"{e['mIoU']:.3f}" for e in evals]]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def plot_comparison(rows: dict, path: Path) -> Path:
    """Grouped bars: mAP and mIoU per condition, with and without IR, per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{c}\n{'RGB+IR' if m == 'rgb_ir' else 'RGB only'}" for c in CONDITIONS
              for m in ("rgb_ir", "rgb_only")]
    width = 0.8 / max(1, len(rows))
    for axis, metric in zip(axes, ("mAP", "mIoU"), strict=True):
        for index, (method, row) in enumerate(rows.items()):
            values = [row["eval"][f"{c}_{m}"][metric] for c in CONDITIONS
                      for m in ("rgb_ir", "rgb_only")]
            axis.bar(np.arange(len(labels)) + index * width, values, width, label=method)
        axis.set_xticks(np.arange(len(labels)) + width * (len(rows) - 1) / 2, labels)
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} on held-out synthetic scenes")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
