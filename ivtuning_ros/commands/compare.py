"""`ivtuning compare`: IV-tuning, CPAL and DRA side by side on one frozen backbone, on
equal terms.

The common start is a model without any adapter (``method: none``): the demo model's
frozen Swin with its output norms and heads re-trained on RGB with the adapter path absent,
so no method's own parameters have learnt anything. Each method takes that Swin, those
norms and heads, builds its own parts at their initialisation (drawn from the run's seed),
and trains them with its own paper's optimiser, learning rate, weight decay and schedule
(`train.recipes`) under the same budget: data, steps, batch, crops, seeds. DRA first learns
its IR modality LoRA without labels (its stage 1, counted in its training time). Several
seeds give mean and spread. Costs are measured on the Swin-T real-time config at 640x512
(random weights: cost does not depend on them). This measures mechanisms on synthetic data,
not the papers' numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data.datasets import open_dataset
from ..evaluation.evaluate import evaluate
from ..hub.cache import resolve
from ..model import IVTuningModel, ModelConfig, build_model, load_config, model_summary
from ..model.adapters.dra.modality_file import load_modality_file
from ..model.checkpoint import export_base, load_checkpoint, load_checkpoint_as, save_checkpoint
from ..runtime import Engine, EngineOptions
from ..train.batch import Augmentation
from ..train.loop import TrainOptions, train
from ..train.modality import ModalityOptions, pretrain_modality
from ..train.recipes import RECIPES

METHODS = ("ivtuning", "cpal", "dra")
METHOD_RECIPES = {"ivtuning": "paper-det", "cpal": "paper-cpal", "dra": "paper-dra"}
# What a method's own paper fixes beyond its recipe: CPAL's IR normalisation.
METHOD_OVERRIDES = {"ivtuning": [], "cpal": ["input.ir_std=0.5"], "dra": []}
START = "none"  # the adapter-free method every compared method starts from
CONDITIONS = ("night", "fog", "day")
MODES = ("rgb_ir", "rgb_only")
SCENE_SIZES = {"rgb_size": (240, 320), "ir_size": (256, 320)}  # the demo recipe's scenes


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="train and evaluate IV-tuning, CPAL and "
                                   "DRA side by side from one adapter-free start")
    parser.add_argument("--start", help="the common start: a full checkpoint of method "
                        "'none' (default: trained first from --visible into OUT/start.pth)")
    parser.add_argument("--visible", default="models/ivt_demo.pth",
                        help="where the start's Swin and initial heads come from "
                             "(default %(default)s)")
    parser.add_argument("--start-steps", type=int, default=100,
                        help="steps re-training the heads on RGB without adapter")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="task training steps")
    parser.add_argument("--modality-steps", type=int, default=60,
                        help="DRA stage 1 steps (unlabelled IR)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--train-scenes", type=int, default=400)
    parser.add_argument("--eval-scenes", type=int, default=30, help="per condition")
    parser.add_argument("--cost-config", default="models/ivt_swin_t_realtime.yaml",
                        help="config whose size the costs are measured at")
    parser.add_argument("--out", default="out/compare")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run_compare_command)
    return parser


def run_compare_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    start = Path(args.start) if args.start else train_start(
        args.visible, out / "start", args.start_steps, args.batch_size, args.train_scenes,
        not args.quiet)
    start_model, start_config = check_start(start)
    report = {"start": str(start), "steps": args.steps, "modality_steps": args.modality_steps,
              "batch_size": args.batch_size, "seeds": args.seeds,
              "eval_scenes_per_condition": args.eval_scenes,
              "recipes": {m: METHOD_RECIPES[m] for m in args.methods},
              "start_eval": _evaluate(start_model.eval(), start_config, args.eval_scenes,
                                      not args.quiet, modes=("rgb_only",)),
              "methods": {}}
    for method in args.methods:
        runs = []
        for seed in args.seeds:
            runs.append(_run_method(method, seed, start, args, out / method / f"seed{seed}"))
            if not args.quiet:
                print(f"{method} seed {seed}: {runs[-1]['training_s']:.0f} s training")
        report["methods"][method] = {**_sizes(runs[0]), **_costs(method, args.cost_config),
                                     "runs": runs, "summary": summarise(runs)}
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    report["separations"] = separations(report["methods"])
    report["wall_s"] = round(time.perf_counter() - begin, 1)
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_tables(report)
    (out / "compare.md").write_text(table + "\n")
    plot_comparison(report, out / "compare.png")
    print(table)
    print(f"wrote {out / 'compare.json'}, compare.md, compare.png ({report['wall_s']:.0f} s)")
    return 0


def train_start(visible: str | Path, out: Path, steps: int, batch_size: int, scenes: int,
                progress: bool) -> Path:
    """The common start: ``visible``'s frozen Swin, output norms and heads, the heads and
    norms re-trained on RGB without any adapter (IV-tuning's recipe, seed 0)."""
    if not Path(resolve(visible)).is_file():  # a weights name: its cache file, or NotCached
        raise FileNotFoundError(f"'{visible}' does not exist: pass --visible with a full "
                                "checkpoint or a weights name, or --start with a start "
                                "trained before")
    model, config = load_checkpoint_as(visible, [f"method={START}"], seed=0)
    options = replace(method_options("ivtuning", steps, batch_size, 0, out), use_ir=False)
    train(model, config, _train_data(0, scenes), options, torch.device("cpu"), progress=progress)
    path = out / "start.pth"
    save_checkpoint(model, config, path)
    return path


def check_start(path: str | Path) -> tuple[IVTuningModel, ModelConfig]:
    """The start's model; refused if some method's parameters were trained in it."""
    model, config = load_checkpoint(path)
    if config.method != START:
        raise ValueError(f"--start '{path}' is a '{config.method}' model, so that method would "
                         f"start trained; compare starts every method from a model of method "
                         f"'{START}': omit --start to train one from --visible")
    return model, config


def starting_model(start: str | Path, method: str, seed: int):
    """``method`` on the start's Swin, norms and heads; its own parts as built under
    ``seed`` (their documented initialisation), with the method's own input settings."""
    return load_checkpoint_as(start, [f"method={method}", *METHOD_OVERRIDES[method]],
                              seed=seed)


def method_options(method: str, steps: int, batch_size: int, seed: int,
                   out: Path) -> TrainOptions:
    """The method's own optimiser, learning rate, weight decay and schedule; the budget
    (steps, batch, crops, augmentation) shared; warm-up the recipe's, at most a tenth of the
    steps, for every method alike."""
    recipe = RECIPES[METHOD_RECIPES[method]]
    return TrainOptions(iterations=steps, batch_size=batch_size, optimizer=recipe.optimizer,
                        lr=recipe.lr, weight_decay=recipe.weight_decay,
                        schedule=recipe.schedule,
                        warmup_steps=max(1, min(recipe.warmup_steps, steps // 10)),
                        seed=seed, augmentation=Augmentation(), out_dir=str(out))


def _train_data(seed: int, scenes: int):
    return open_dataset("synthetic", length=scenes, seed=seed, **SCENE_SIZES)


def _run_method(method: str, seed: int, start: Path, args: argparse.Namespace,
                out: Path) -> dict:
    model, config = starting_model(start, method, seed)
    export_base(model, config, out)
    data = _train_data(seed, args.train_scenes)
    begin = time.perf_counter()
    if method == "dra":
        pretrain_modality(model, config, data, out,
                          ModalityOptions(steps=args.modality_steps, batch_size=args.batch_size,
                                          seed=seed),
                          data_name="synthetic IR", progress=not args.quiet)
        config.dra.modality_lora = str(out / "modality.pth")
        load_modality_file(model.backbone, config, config.dra.modality_lora)
    train(model, config, data, method_options(method, args.steps, args.batch_size, seed, out),
          torch.device("cpu"), progress=not args.quiet)
    training_s = time.perf_counter() - begin
    summary = model_summary(model)
    return {
        "seed": seed,
        "trainable_backbone_params": summary["backbone_trainable_params"],
        "trainable_params": summary["trainable_params"],
        "frozen_params": summary["backbone_frozen_params"] + summary["reusable_frozen_params"],
        "task_file_mb": round((out / "last.pth").stat().st_size / 2**20, 2),
        "shared_modality_file_mb": (round((out / "modality.pth").stat().st_size / 2**20, 2)
                                    if method == "dra" else 0.0),
        "training_s": round(training_s, 1),
        "eval": _evaluate(model.eval(), config, args.eval_scenes, not args.quiet),
    }


def _sizes(run: dict) -> dict:
    keys = ("trainable_backbone_params", "trainable_params", "frozen_params", "task_file_mb",
            "shared_modality_file_mb")
    return {key: run[key] for key in keys}


def _evaluate(model, config: ModelConfig, scenes: int, progress: bool,
              modes: tuple[str, ...] = MODES) -> dict:
    engine = Engine(model, config, EngineOptions(device="cpu", score_threshold=0.001,
                                                 max_detections=100))
    results = {}
    for condition in CONDITIONS:
        data = open_dataset("synthetic", length=scenes, seed=7, conditions=(condition,),
                            **SCENE_SIZES)
        for mode in modes:
            report = evaluate(engine, data, progress=progress, use_ir=mode == "rgb_ir")
            results[f"{condition}_{mode}"] = {
                "mAP": round(report["detection"]["mAP"], 4),
                "mIoU": round(report["segmentation"]["mIoU"], 4)}
    return results


def summarise(runs: list[dict]) -> dict:
    """Per evaluation cell and metric: mean, sample standard deviation (0 for one seed),
    min and max over the seeds."""
    summary = {}
    for cell in runs[0]["eval"]:
        summary[cell] = {}
        for metric in ("mAP", "mIoU"):
            values = np.array([run["eval"][cell][metric] for run in runs])
            summary[cell][metric] = {
                "mean": round(float(values.mean()), 4),
                "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
                "min": float(values.min()), "max": float(values.max())}
    summary["training_s"] = round(float(np.mean([run["training_s"] for run in runs])), 1)
    return summary


def separations(methods: dict) -> list[dict]:
    """Pairs of methods whose means differ by more than the sum of their spreads (std), per
    cell: the differences the seeds support."""
    found = []
    names = list(methods)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            for cell in methods[first]["summary"]:
                if cell == "training_s":
                    continue
                for metric in ("mAP", "mIoU"):
                    a = methods[first]["summary"][cell][metric]
                    b = methods[second]["summary"][cell][metric]
                    if abs(a["mean"] - b["mean"]) > a["std"] + b["std"]:
                        better, worse = (first, second) if a["mean"] > b["mean"] else (second,
                                                                                        first)
                        found.append({"cell": cell, "metric": metric, "better": better,
                                      "worse": worse,
                                      "difference": round(abs(a["mean"] - b["mean"]), 4)})
    return found


def _cell_names() -> list[str]:
    return [f"{c} {'IR' if m == 'rgb_ir' else 'RGB'}" for c in CONDITIONS for m in MODES]


def markdown_tables(report: dict) -> str:
    """Sizes, costs and training time per method; then mAP and mIoU (mean ± std over the
    seeds) per condition with and without IR, the start's RGB-only accuracy first."""
    methods = report["methods"]
    header = ["method", "recipe (own)", "#TP backbone", "trainable", "frozen", "task file MiB",
              "GFLOPs", "CPU ms", "train s / seed"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method, row in methods.items():
        recipe = RECIPES[METHOD_RECIPES[method]]
        storage = f"{row['task_file_mb']}" + (
            f" (+{row['shared_modality_file_mb']} shared)" if row["shared_modality_file_mb"]
            else "")
        values = [method, f"{recipe.optimizer} lr {recipe.lr:g}, wd {recipe.weight_decay:g}, "
                  f"{recipe.schedule}", f"{row['trainable_backbone_params']:,}",
                  f"{row['trainable_params']:,}", f"{row['frozen_params']:,}", storage,
                  f"{row['gflops']}", f"{row['cpu_ms']:.0f}",
                  f"{row['summary']['training_s']:.0f}"]
        lines.append("| " + " | ".join(values) + " |")
    cells = [(c, m) for c in CONDITIONS for m in MODES]
    for metric in ("mAP", "mIoU"):
        header = ["method", *[f"{metric} {name}" for name in _cell_names()]]
        lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        start = [f"{report['start_eval'][f'{c}_rgb_only'][metric]:.3f}" for c, _ in cells]
        lines.append("| start (no adapter, RGB) | " + " | ".join(start) + " |")
        for method, row in methods.items():
            values = [f"{row['summary'][f'{c}_{m}'][metric]['mean']:.3f} ± "
                      f"{row['summary'][f'{c}_{m}'][metric]['std']:.3f}" for c, m in cells]
            lines.append(f"| {method} | " + " | ".join(values) + " |")
    return "\n".join(lines)


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
            begin = time.perf_counter()
            model(rgb, ir)
            times.append(time.perf_counter() - begin)
    return {"cost_config": config.name, "gflops": round(counter.get_total_flops() / 1e9, 1),
            "cpu_ms": round(1000 * float(np.median(times)), 0)}


def plot_comparison(report: dict, path: Path) -> Path:
    """Grouped bars with the seeds' spread (std) as error bars: mAP and mIoU per condition,
    with and without IR, per method; the start's RGB-only accuracy as a black tick."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    cells = [(c, m) for c in CONDITIONS for m in MODES]
    labels = [f"{c}\n{'RGB+IR' if m == 'rgb_ir' else 'RGB only'}" for c, m in cells]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(labels))
    for axis, metric in zip(axes, ("mAP", "mIoU"), strict=True):
        for index, (method, row) in enumerate(methods.items()):
            means = [row["summary"][f"{c}_{m}"][metric]["mean"] for c, m in cells]
            spread = [row["summary"][f"{c}_{m}"][metric]["std"] for c, m in cells]
            axis.bar(x + index * width, means, width, yerr=spread, capsize=3, label=method)
        start = [report["start_eval"][f"{c}_rgb_only"][metric] for c, _ in cells]
        centre = x + width * (len(methods) - 1) / 2
        axis.scatter(centre, start, marker="_", s=900, color="black", label="start (RGB)")
        axis.set_xticks(centre, labels)
        axis.set_ylabel(metric)
        axis.set_title(f"{metric}, mean ± std over seeds {report['seeds']}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
