"""The paper's training recipes as named presets of `ivtuning train` (``--recipe``).

The paper (sec. IV-A) gives optimiser, learning rate, weight decay, length, batch size
and crop size. What it leaves open is chosen here and said in README: the schedule
(DINO's detector: warm-up then cosine; SegFormer's segmenter: warm-up then poly, as
mmseg's SegFormer schedule; the SOD decoder: warm-up then cosine), the warm-up length, SGD
momentum 0.9, and the augmentation
(our paired flip / zoom / photometric changes, then the random crop).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """One training preset. Exactly one of ``epochs`` and ``iterations`` is set; ``crop`` is
    the random crop (height, width) of the registered RGB-IR pair, boxes and mask following."""

    description: str
    optimizer: str  # "adamw" | "adam" | "sgd"
    lr: float
    weight_decay: float
    batch_size: int
    crop: tuple[int, int]
    schedule: str  # "cosine" | "poly"
    warmup_steps: int
    epochs: int | None = None
    iterations: int | None = None
    momentum: float = 0.9


RECIPES: dict[str, Recipe] = {
    "paper-det": Recipe(
        description="detection (DINO): AdamW lr 1e-4, weight decay 1e-4, 48 epochs, batch 2, "
                    "640x640 crops",
        optimizer="adamw", lr=1e-4, weight_decay=1e-4, batch_size=2, crop=(640, 640),
        schedule="cosine", warmup_steps=500, epochs=48),
    "paper-seg": Recipe(
        description="segmentation (SegFormer): SGD lr 1e-3, weight decay 1e-2, 160k "
                    "iterations, batch 2, 512x512 crops",
        optimizer="sgd", lr=1e-3, weight_decay=1e-2, batch_size=2, crop=(512, 512),
        schedule="poly", warmup_steps=1500, iterations=160_000),
    # The other methods' own recipes (SEED_METHODS.md 1.4 and 2.4), for `ivtuning compare`
    # and for training them on their own terms.
    "paper-cpal": Recipe(
        description="CPAL (its paper's segmentation recipe): AdamW lr 2e-5, weight decay "
                    "0.05, 40k iterations, batch 2, 480x640 crops (its code's), poly, "
                    "warm-up 1500",
        optimizer="adamw", lr=2e-5, weight_decay=0.05, batch_size=2, crop=(480, 640),
        schedule="poly", warmup_steps=1500, iterations=40_000),
    "paper-dra": Recipe(
        description="DRA (its paper's stage 2): AdamW lr 3e-4; weight decay 0.05, cosine, "
                    "40k iterations, batch 2, 640x640 crops chosen here",
        optimizer="adamw", lr=3e-4, weight_decay=0.05, batch_size=2, crop=(640, 640),
        schedule="cosine", warmup_steps=500, iterations=40_000),
    # Adam's weight decay is the L2 term added to the gradient (torch.optim.Adam), as the
    # paper names Adam, not AdamW.
    "paper-sod": Recipe(
        description="salient object detection (CPNet): Adam lr 5e-5, weight decay 1e-1, 200 "
                    "epochs, batch 8, 384x384 crops",
        optimizer="adam", lr=5e-5, weight_decay=1e-1, batch_size=8, crop=(384, 384),
        schedule="cosine", warmup_steps=300, epochs=200),
}
