"""`ivtuning train-fusion`: M2PN trained without ground truth (SEED_METHODS.md section 3.3)
on registered RGB-IR pairs made by the engine's own preprocessing (letterbox, IR gain
control, registration onto RGB), random crops of their image region; the memory bank is
filled by a quality scorer after every step (Alg. 1)."""
from __future__ import annotations

import argparse
import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import add_dataset_arguments, dataset_from_arguments
from ..model import ModelConfig, load_config
from ..model.fusion.checkpoint import load_fusion, save_fusion
from ..model.fusion.color import luminance, unnormalise
from ..model.fusion.m2pn import M2PN, M2PNConfig
from ..train.batch import Augmentation, BatchBuilder
from ..train.loop import load_training_state
from .losses import contrast_loss, fusion_loss
from .quality import ClipScorer, HandcraftedScorer, QualityScorer

STATE_FILE, CHECKPOINT_FILE = "fusion_state.pth", "fusion.pth"


@dataclass
class FusionTrainOptions:
    steps: int = 400
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-3
    decay_at: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])  # x0.5 each
    k: float = 1.0
    structure_weight: float = 15.0
    seed: int = 0
    out_dir: str = "out/fusion"


def registered_pairs(batch, config: ModelConfig, crop: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(IR, Y) crops (B, 1, crop, crop) in [0, 1] from a training batch's image regions."""
    rgb, ir = unnormalise(batch.rgb, batch.ir, config.input)
    y = luminance(rgb)
    crops_ir, crops_y = [], []
    for index, (height, width) in enumerate(batch.valid_sizes.round().long().tolist()):
        size = min(crop, height, width)
        top = int(torch.randint(0, height - size + 1, (), generator=generator))
        left = int(torch.randint(0, width - size + 1, (), generator=generator))
        window = (slice(top, top + size), slice(left, left + size))
        crops_ir.append(_resize(ir[index:index + 1, :, window[0], window[1]], crop))
        crops_y.append(_resize(y[index:index + 1, :, window[0], window[1]], crop))
    return torch.cat(crops_ir), torch.cat(crops_y)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear",
                                           align_corners=False)


def train_fusion(model: M2PN, config: ModelConfig, dataset, options: FusionTrainOptions,
                 scorer: QualityScorer, resume: bool = False, progress: bool = True) -> dict:
    """Train ``model`` in place; writes ``fusion.pth``, ``fusion_state.pth`` and ``log.csv``
    into ``out_dir``; returns the last step's losses."""
    torch.manual_seed(options.seed)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [round(f * options.steps) for f in options.decay_at], gamma=0.5)
    step = (load_training_state(out / STATE_FILE, model, optimizer, scheduler)["step"]
            if resume else 0)
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=True,
                        collate_fn=BatchBuilder(config, Augmentation(), use_ir=True,
                                                seed=options.seed),
                        generator=torch.Generator().manual_seed(options.seed + step))
    generator = torch.Generator().manual_seed(options.seed + step)
    model.train()
    losses: dict = {}
    bar = tqdm(total=options.steps, initial=step, unit="step", desc="fusion",
               disable=not progress)
    with open(out / "log.csv", "a", newline="") as log_file:
        log = csv.writer(log_file)
        if step == 0:
            log.writerow(["step", "loss", "intensity", "structure", "contrast", "quality",
                          "threshold", "accepted"])
        while step < options.steps:
            for batch in loader:
                if step >= options.steps:
                    break
                losses = _step(model, optimizer, scorer, batch, config, options, generator)
                scheduler.step()
                step += 1
                log.writerow([step, *(f"{v:.5f}" for v in losses.values())])
                log_file.flush()  # followable with tail -f
                bar.set_postfix(loss=f"{losses['loss']:.3f}", accept=f"{losses['accepted']:.2f}")
                bar.update()
            torch.save({"step": step, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "options": asdict(options)},
                       out / STATE_FILE)
    bar.close()
    save_fusion(model.eval(), out / CHECKPOINT_FILE, input=asdict(config.input),
                steps=options.steps, scorer=type(scorer).__name__)
    return losses


def _step(model: M2PN, optimizer, scorer: QualityScorer, batch, config: ModelConfig,
          options: FusionTrainOptions, generator: torch.Generator) -> dict:
    ir, y = registered_pairs(batch, config, options.crop, generator)
    output = model(ir, y)
    terms = fusion_loss(output.fused, ir, y, options.k, options.structure_weight)
    contrast = contrast_loss(output)
    loss = terms["fusion"] + contrast
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    # Alg. 1: score the fused batch after the update, then write the accepted samples.
    quality = scorer.score(output.fused.detach().clamp(0, 1), ir, y)
    threshold = model.memory.threshold()
    accepted = model.memory.update(output.theta[2].detach(), quality)
    return {"loss": loss.item(), "intensity": terms["intensity"].item(),
            "structure": terms["structure"].item(), "contrast": contrast.item(),
            "quality": quality.mean().item(),
            "threshold": threshold if math.isfinite(threshold) else 0.0,
            "accepted": accepted.float().mean().item()}


def add_train_fusion_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train-fusion", help="train the M2PN image-fusion network "
                                   "without labels on registered RGB-IR pairs")
    parser.add_argument("--config", default="models/ivt_demo.yaml",
                        help="model config whose input preprocessing makes the pairs "
                             "(default %(default)s)")
    add_dataset_arguments(parser, default_length=200, default_split="train")
    defaults = FusionTrainOptions()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--crop", type=int, default=defaults.crop)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--dim", type=int, default=M2PNConfig.dim,
                        help="node embedding width D (184: 0.96M parameters)")
    parser.add_argument("--clip", metavar="CHECKPOINT",
                        help="score the memory with CLIP ViT-B/32 (open_clip, a local "
                             "checkpoint) instead of the offline scorer")
    parser.add_argument("--init", help="continue from a fusion checkpoint")
    parser.add_argument("--half", action="store_true", help="also write fusion_fp16.pth")
    parser.add_argument("--out", default="out/fusion")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run_train_fusion_command)
    return parser


def run_train_fusion_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    model = load_fusion(args.init) if args.init else M2PN(M2PNConfig(dim=args.dim))
    scorer = ClipScorer(args.clip) if args.clip else HandcraftedScorer()
    options = FusionTrainOptions(steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                                 lr=args.lr, seed=args.seed, out_dir=args.out)
    losses = train_fusion(model, config, dataset_from_arguments(args), options, scorer,
                          resume=args.resume, progress=not args.quiet)
    if args.half:
        save_fusion(model, Path(args.out) / "fusion_fp16.pth", half=True,
                    input=asdict(config.input), steps=options.steps)
    print(f"trained M2PN for {options.steps} steps: final loss {losses['loss']:.4f}; "
          f"checkpoint {Path(args.out) / CHECKPOINT_FILE}")
    return 0
