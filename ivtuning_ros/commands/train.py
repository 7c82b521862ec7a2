"""`ivtuning train`: IV-tuning (or visible pre-training) from the command line."""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import torch

from ..data.datasets import add_dataset_arguments, dataset_from_arguments
from ..model import IVTuningModel, ModelConfig, load_model
from ..model.adapters.dra.modality_file import load_modality_file
from ..model.checkpoint import export_base, load_checkpoint_as
from ..train.batch import Augmentation
from ..train.loop import TrainOptions, train
from ..train.modality import ModalityOptions, pretrain_modality
from ..train.recipes import RECIPES

# TrainOptions' own defaults, for the options a recipe may set.
DEFAULTS = {f.name: f.default for f in fields(TrainOptions)}


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="IV-tuning: train the IR embedding, prompter and heads on RGB-IR data")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="model config YAML (its backbone.weights is the "
                                         "frozen base)")
    source.add_argument("--init", help="start from a full checkpoint (e.g. a visible-light "
                                       "pre-trained model): its config and weights (with "
                                       "--set, the weights the changed config shares)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. --set "
                        "method=cpal")
    parser.add_argument("--stage", choices=("task", "modality"), default="task",
                        help="task: train for the heads' task (default); modality: DRA's "
                             "stage 1, learn the IR modality LoRA from unlabelled IR and "
                             "write OUT/modality.pth (--iterations steps, default 200)")
    add_dataset_arguments(parser, default_length=200, default_split="train")
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="a training preset of the "
                        "paper: " + "; ".join(f"{k}: {r.description}"
                                              for k, r in sorted(RECIPES.items()))
                        + ". Options given explicitly override it")
    parser.add_argument("--epochs", type=int, help=f"default {DEFAULTS['epochs']}")
    parser.add_argument("--iterations", type=int, help="training steps (instead of --epochs)")
    parser.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    parser.add_argument("--optimizer", choices=("adamw", "adam", "sgd"),
                        help=f"default {DEFAULTS['optimizer']}")
    parser.add_argument("--lr", type=float, help=f"default {DEFAULTS['lr']}")
    parser.add_argument("--weight-decay", type=float,
                        help=f"default {DEFAULTS['weight_decay']}")
    parser.add_argument("--schedule", choices=("cosine", "poly"),
                        help=f"after warm-up; default {DEFAULTS['schedule']}")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="random crop of the registered pair (after the letterbox and "
                             "augmentation); default none")
    parser.add_argument("--warmup", type=int, help=f"warm-up steps; default "
                                                   f"{DEFAULTS['warmup_steps']}")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--train-backbone", action="store_true",
                        help="train the Swin too (visible pre-training, not IV-tuning)")
    parser.add_argument("--heads-only", action="store_true",
                        help="train the heads alone, the IR embedding and prompter frozen too "
                             "(e.g. a new head on a trained model: --init ... --set sod=...)")
    parser.add_argument("--rgb-only", action="store_true", help="train without IR")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing in the backbone (large models)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="out/train", help="checkpoints and logs")
    parser.add_argument("--resume", action="store_true", help="continue from --out's state")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train_command)
    return parser


def run_train_command(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)  # the same initial weights on every torchrun rank
    model, config = _initial_model(args)
    dataset = dataset_from_arguments(args)
    if args.stage == "modality":
        return _train_modality(model, config, dataset, args)
    crop = args.crop or (RECIPES[args.recipe].crop if args.recipe else None)
    options = TrainOptions(**_schedule_options(args),
                           augmentation=Augmentation(crop=tuple(crop) if crop else None),
                           train_backbone=args.train_backbone, heads_only=args.heads_only,
                           use_ir=not args.rgb_only, gradient_checkpointing=args.checkpointing,
                           workers=args.workers, seed=args.seed, out_dir=args.out)
    losses = train(model, config, dataset, options, torch.device(args.device),
                   resume=args.resume, progress=not args.quiet)
    kind = "full" if args.train_backbone else "adapter"
    length = (f"{options.iterations} iterations" if options.iterations
              else f"{options.epochs} epochs")
    print(f"trained {config.name} for {length}: final loss {losses['loss']:.4f}; "
          f"{kind} checkpoint {Path(args.out) / 'last.pth'}")
    return 0


def _initial_model(args: argparse.Namespace) -> tuple[IVTuningModel, ModelConfig]:
    """The model to train: a config's, or an --init checkpoint's (with --set overrides, a
    new model of the changed config takes every tensor it shares with the checkpoint)."""
    if not args.init:
        model, config, _ = load_model(args.config, None, overrides=args.overrides)
        return model, config
    model, config = load_checkpoint_as(args.init, args.overrides)
    if not args.train_backbone:
        export_base(model, config, args.out)
        if config.method == "dra" and config.dra.modality_lora:
            load_modality_file(model.backbone, config, config.dra.modality_lora)
    return model, config


def _train_modality(model: IVTuningModel, config: ModelConfig, dataset,
                    args: argparse.Namespace) -> int:
    if config.method != "dra":
        raise ValueError(f"--stage modality learns DRA's modality LoRA; model "
                         f"'{config.name}' uses method '{config.method}' (--set method=dra)")
    options = ModalityOptions(steps=args.iterations or 200,
                              batch_size=args.batch_size or DEFAULTS["batch_size"],
                              lr=args.lr or 3e-4, seed=args.seed, workers=args.workers)
    losses = pretrain_modality(model, config, dataset, args.out, options,
                               data_name=f"{args.data} IR", progress=not args.quiet)
    print(f"learnt the IR modality of {config.name} in {options.steps} steps: final loss "
          f"{losses['loss']:.4f}; modality file {Path(args.out) / 'modality.pth'}")
    return 0


def _schedule_options(args: argparse.Namespace) -> dict:
    """Optimiser and schedule: each option given on the command line, else the recipe's,
    else the default. A recipe's length is iterations or epochs, whichever it names."""
    recipe = RECIPES[args.recipe] if args.recipe else None
    given = {"epochs": args.epochs, "iterations": args.iterations,
             "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
             "weight_decay": args.weight_decay, "schedule": args.schedule,
             "warmup_steps": args.warmup}
    options = {}
    for name, value in given.items():
        if value is None and recipe is not None:
            value = getattr(recipe, name)
        options[name] = DEFAULTS.get(name) if value is None else value
    if args.epochs is not None and args.iterations is None:
        options["iterations"] = None  # an explicit --epochs replaces a recipe's iterations
    return options
