"""`ivtuning train-fusion`: M2PN trained without labels on registered RGB-IR pairs
(`image_fusion.train`), from the command line."""
from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

from ..data.datasets import add_dataset_arguments, dataset_from_arguments
from ..image_fusion.quality import ClipScorer, HandcraftedScorer
from ..image_fusion.train import CHECKPOINT_FILE, RECIPES, FusionTrainOptions, train_fusion
from ..model import load_config
from ..model.image_fusion.checkpoint import load_fusion, save_fusion
from ..model.image_fusion.m2pn import M2PN, M2PNConfig


def add_train_fusion_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train-fusion", help="train the M2PN image-fusion network "
                                   "without labels on registered RGB-IR pairs")
    parser.add_argument("--config", default="models/ivt_demo.yaml",
                        help="model config whose IR gain control makes the pairs "
                             "(default %(default)s)")
    add_dataset_arguments(parser, default_length=200, default_split="train")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="demo",
                        help="defaults of the options below: demo (400 steps, batch 8), or "
                             "paper (RoadScene protocol: 128x128 crops, batch 16, lr 1e-3, "
                             "50,000 steps halved at 20/40/60/80%%, 40 validation pairs); "
                             "an option given explicitly wins (default %(default)s)")
    parser.add_argument("--steps", type=int, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, help="crops per step")
    parser.add_argument("--crop", type=int, help="side of the square training crops, px of "
                                                 "the pair's own resolution")
    parser.add_argument("--lr", type=float, help="Adam's initial learning rate")
    parser.add_argument("--val-pairs", type=int, metavar="N",
                        help="hold N pairs out (drawn with --seed) and measure the fusion "
                             "loss on them every --val-every steps; 0: none")
    parser.add_argument("--val-every", type=int, metavar="STEPS",
                        help="steps between validation runs")
    parser.add_argument("--dim", type=int, default=M2PNConfig.dim,
                        help="node embedding width D (184: 0.96M parameters)")
    parser.add_argument("--clip", metavar="CHECKPOINT",
                        help="score the memory with CLIP ViT-B/32 (open_clip, a local "
                             "checkpoint) instead of the offline scorer")
    parser.add_argument("--init", help="continue from a fusion checkpoint (fine-tuning)")
    parser.add_argument("--half", action="store_true", help="also write fusion_fp16.pth")
    parser.add_argument("--out", default="out/fusion", help="output folder (default "
                                                            "%(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last saved state")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_train_fusion_command)
    return parser


def options_from_arguments(args: argparse.Namespace) -> FusionTrainOptions:
    """The recipe's options, with those given on the command line in their place."""
    given = {name: getattr(args, name) for name in
             ("steps", "batch_size", "crop", "lr", "val_pairs", "val_every")
             if getattr(args, name) is not None}
    return replace(RECIPES[args.recipe], **given, seed=args.seed, out_dir=args.out)


def run_train_fusion_command(args: argparse.Namespace) -> int:
    config = load_config(args.config).input
    model = load_fusion(args.init) if args.init else M2PN(M2PNConfig(dim=args.dim))
    scorer = ClipScorer(args.clip) if args.clip else HandcraftedScorer()
    options = options_from_arguments(args)
    result = train_fusion(model, config, dataset_from_arguments(args), options, scorer,
                          resume=args.resume, progress=not args.quiet)
    if args.half:
        save_fusion(model, Path(args.out) / "fusion_fp16.pth", half=True,
                    input=asdict(config), steps=options.steps)
    print(f"trained M2PN for {options.steps} steps in {result['train_seconds']:.0f} s: final "
          f"loss {result['loss']:.4f}; checkpoint {Path(args.out) / CHECKPOINT_FILE}")
    return 0
