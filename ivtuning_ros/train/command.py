"""`ivtuning train`: IV-tuning (or visible pre-training) from the command line."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.datasets import DATASETS, open_dataset
from ..model import IVTuningModel, load_model
from ..model.checkpoint import load_checkpoint
from .loop import TrainOptions, train


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="IV-tuning: train the IR embedding, prompter and heads on RGB-IR data")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="model config YAML (its backbone.weights is the "
                                         "frozen base)")
    source.add_argument("--init", help="start from a full checkpoint (e.g. a visible-light "
                                       "pre-trained model): its config and weights")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (with --config)")
    parser.add_argument("--data", required=True, choices=list(DATASETS), metavar="KIND",
                        help=f"dataset kind: {', '.join(DATASETS)}")
    parser.add_argument("--root", help="dataset folder (not for synthetic)")
    parser.add_argument("--split", default="train", help="llvip/mfnet split")
    parser.add_argument("--length", type=int, default=200, help="synthetic: scenes")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data and training seed")
    parser.add_argument("--conditions", default="day,night,fog",
                        help="synthetic: comma-separated conditions")
    parser.add_argument("--scene-scale", type=float, default=1.0,
                        help="synthetic: camera resolution scale (0.5: 320x240 RGB, "
                             "320x256 IR), to render no more pixels than the network sees")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--train-backbone", action="store_true",
                        help="train the Swin too (visible pre-training, not IV-tuning)")
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
    if args.init:
        model, config = load_checkpoint(args.init)
        if not args.train_backbone:
            config.backbone.weights = _export_base(model, Path(args.out))
    else:
        model, config, _ = load_model(args.config, None, overrides=args.overrides)
    options_kwargs = {"split": args.split} if args.data in ("llvip", "mfnet") else {}
    if args.data == "synthetic":
        options_kwargs = {"length": args.length, "seed": args.seed,
                          "conditions": tuple(args.conditions.split(",")),
                          "rgb_size": _scaled(480, 640, args.scene_scale),
                          "ir_size": _scaled(512, 640, args.scene_scale)}
    dataset = open_dataset(args.data, args.root, **options_kwargs)
    options = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           warmup_steps=args.warmup, train_backbone=args.train_backbone,
                           use_ir=not args.rgb_only, gradient_checkpointing=args.checkpointing,
                           workers=args.workers, seed=args.seed, out_dir=args.out)
    losses = train(model, config, dataset, options, torch.device(args.device),
                   resume=args.resume, progress=not args.quiet)
    kind = "full" if args.train_backbone else "adapter"
    print(f"trained {config.name} for {args.epochs} epochs: final loss {losses['loss']:.4f}; "
          f"{kind} checkpoint {Path(args.out) / 'last.pth'}")
    return 0


def _export_base(model: IVTuningModel, out: Path) -> str:
    """Write the frozen Swin of an --init checkpoint as the adapters' base weights file."""
    out.mkdir(parents=True, exist_ok=True)
    path = (out / "base_swin.pth").resolve()
    torch.save(model.backbone.swin.state_dict(), path)
    return str(path)


def _scaled(height: int, width: int, scale: float) -> tuple[int, int]:
    return round(height * scale), round(width * scale)
