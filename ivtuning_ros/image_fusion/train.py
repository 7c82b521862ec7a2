"""M2PN trained without ground truth (SEED_METHODS.md section 3.3; `ivtuning train-fusion`)
on random crops of registered RGB-IR pairs at their own resolution (`pairs.unit_pair`: the
engine's IR gain control and registration, no letterbox); the memory bank is filled by a
quality scorer after every step (Alg. 1). ``--recipe paper`` is the paper's RoadScene
protocol; ``--val-pairs`` holds pairs out and logs a validation curve."""
from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..model.config import InputConfig
from ..model.image_fusion.checkpoint import save_fusion
from ..model.image_fusion.color import luminance
from ..model.image_fusion.m2pn import M2PN
from ..train.loop import load_training_state
from .losses import contrast_loss, fusion_loss
from .pairs import held_out_indices, unit_pair
from .quality import QualityScorer

STATE_FILE, CHECKPOINT_FILE, BEST_FILE = "fusion_state.pth", "fusion.pth", "fusion_best.pth"
VALIDATION_LOG, VALIDATION_PLOT = "validation.csv", "validation.png"


@dataclass
class FusionTrainOptions:
    steps: int = 400
    batch_size: int = 16  # the paper's
    crop: int = 128
    lr: float = 1e-3
    decay_at: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])  # x0.5 each
    k: float = 1.0
    structure_weight: float = 15.0
    val_pairs: int = 0  # held out of training, measured every val_every steps
    val_every: int = 50
    seed: int = 0
    out_dir: str = "out/fusion"


# The paper's RoadScene protocol (SEED_METHODS.md 3.3): 8,000 random 128x128 crops, 40
# validation pairs, Adam, batch 16, lr 1e-3; 100 epochs of the 8,000 crops = 50,000 steps,
# halved at 20/40/60/80% (the sister repositories' schedule: the paper names none).
RECIPES = {
    "demo": FusionTrainOptions(batch_size=8),  # half the paper's batch: a CPU's budget
    "paper": FusionTrainOptions(steps=100 * 8000 // 16, batch_size=16, crop=128, lr=1e-3,
                                val_pairs=40, val_every=500),
}


class RandomCrops(Dataset):
    """A random ``crop`` x ``crop`` window of each registered pair, as (IR, Y) in [0, 1],
    (1, crop, crop) each; a pair smaller than the crop gives its largest square, resized."""

    def __init__(self, dataset, indices: list[int], config: InputConfig, crop: int,
                 seed: int) -> None:
        self.dataset, self.indices, self.config, self.crop = dataset, indices, config, crop
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, ir = unit_pair(self.dataset[self.indices[index]], self.config)
        height, width = ir.shape[-2:]
        size = min(self.crop, height, width)
        top = int(torch.randint(0, height - size + 1, (), generator=self.generator))
        left = int(torch.randint(0, width - size + 1, (), generator=self.generator))
        window = (..., slice(top, top + size), slice(left, left + size))
        pair = torch.cat([ir[window], luminance(rgb)[window]], 1)
        if size != self.crop:
            pair = torch.nn.functional.interpolate(pair, size=(self.crop, self.crop),
                                                   mode="bilinear", align_corners=False)
        return pair[0, :1], pair[0, 1:]


def train_fusion(model: M2PN, config: InputConfig, dataset, options: FusionTrainOptions,
                 scorer: QualityScorer, resume: bool = False, progress: bool = True) -> dict:
    """Train ``model`` in place; writes ``fusion.pth``, ``fusion_state.pth`` and ``log.csv``
    into ``out_dir`` (with ``val_pairs``: also ``validation.csv``, ``validation.png`` and the
    best checkpoint by validation loss, ``fusion_best.pth``); returns the last step's
    losses and the training time."""
    torch.manual_seed(options.seed)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_out = (held_out_indices(len(dataset), options.val_pairs, options.seed)
                if options.val_pairs else [])
    train_indices = sorted(set(range(len(dataset))) - set(held_out))
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [round(f * options.steps) for f in options.decay_at], gamma=0.5)
    step = (load_training_state(out / STATE_FILE, model, optimizer, scheduler)["step"]
            if resume else 0)
    loader = DataLoader(RandomCrops(dataset, train_indices, config, options.crop,
                                    options.seed + step),
                        batch_size=options.batch_size, shuffle=True, drop_last=False,
                        generator=torch.Generator().manual_seed(options.seed + step))
    validation = Validation(dataset, held_out, config, out, options) if held_out else None
    model.train()
    losses: dict = {}
    started = time.monotonic()
    bar = tqdm(total=options.steps, initial=step, unit="step", desc="fusion",
               disable=not progress)
    with open(out / "log.csv", "a", newline="") as log_file:
        log = csv.writer(log_file)
        if step == 0:
            log.writerow(["step", "loss", "intensity", "structure", "contrast", "quality",
                          "threshold", "accepted"])
        while step < options.steps:
            for ir, y in loader:
                if step >= options.steps:
                    break
                losses = _step(model, optimizer, scorer, ir, y, options)
                scheduler.step()
                step += 1
                log.writerow([step, *(f"{v:.5f}" for v in losses.values())])
                log_file.flush()  # followable with tail -f
                bar.set_postfix(loss=f"{losses['loss']:.3f}", accept=f"{losses['accepted']:.2f}")
                bar.update()
                if validation and (step % options.val_every == 0 or step == options.steps):
                    validation.run(model, step)
            torch.save({"step": step, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "options": asdict(options)},
                       out / STATE_FILE)
    bar.close()
    save_fusion(model.eval(), out / CHECKPOINT_FILE, input=asdict(config),
                steps=options.steps, scorer=type(scorer).__name__)
    return {**losses, "train_seconds": round(time.monotonic() - started, 1)}


class Validation:
    """The fusion loss on the held-out pairs, whole and at their own resolution: one row of
    ``validation.csv`` per run, the curve in ``validation.png``, the best model saved."""

    def __init__(self, dataset, indices: list[int], config: InputConfig, out: Path,
                 options: FusionTrainOptions) -> None:
        self.pairs = [unit_pair(dataset[i], config) for i in indices]
        self.config, self.out, self.options = config, out, options
        self.curve: list[tuple[int, float]] = []

    @torch.no_grad()
    def run(self, model: M2PN, step: int) -> float:
        model.eval()
        total = 0.0
        for rgb, ir in self.pairs:
            y = luminance(rgb)
            fused = model(ir, y).fused.clamp(0, 1)
            total += fusion_loss(fused, ir, y, self.options.k,
                                 self.options.structure_weight)["fusion"].item()
        model.train()
        loss = total / len(self.pairs)
        if not self.curve or loss < min(v for _, v in self.curve):
            save_fusion(model, self.out / BEST_FILE, input=asdict(self.config), steps=step)
        self.curve.append((step, loss))
        with open(self.out / VALIDATION_LOG, "w", newline="") as file:
            csv.writer(file).writerows([("step", "validation_loss"), *self.curve])
        _plot_curve(self.curve, self.out / VALIDATION_PLOT)
        return loss


def _plot_curve(curve: list[tuple[int, float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.2))
    steps, losses = zip(*curve, strict=True)
    axes.plot(steps, losses, marker="o")
    axes.set_xlabel("step")
    axes.set_ylabel("validation fusion loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _step(model: M2PN, optimizer, scorer: QualityScorer, ir: torch.Tensor, y: torch.Tensor,
          options: FusionTrainOptions) -> dict:
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
