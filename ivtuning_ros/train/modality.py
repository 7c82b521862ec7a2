"""DRA stage 1: progressive self-supervised tuning (PSST) of the IR modality LoRA.

The IR stream (frozen Swin + trainable modality LoRA) learns from unlabelled IR frames
(SEED_METHODS.md section 2.3, equations D1-D9 as reconstructed there):

* masked reconstruction (SimMIM-style): 60% of 32-pixel units of the stem's tokens are
  replaced by a learnt mask token; a 1x1 conv + PixelShuffle on the last stage predicts
  the normalised IR; e_i is the squared error of unit i (D1-D3);
* after a warm-up of reconstruction alone, self-distillation from an EMA teacher (D5-D9):
  image level (DINO: the teacher's view of the whole frame against the student's masked
  view and a random crop, both ways) and patch level (iBOT: per masked unit, weighted by
  softmax of its z-scored reconstruction error, w_i ~ exp(alpha e_i)), on the structurally
  complex frames (D4: reconstruction-error variance in the batch's upper ``high_fraction``;
  the paper ranks the whole set, a batch is the practical unit here).

Writes one modality file (`model/adapters/dra/modality_file.py`); the heads used here
are discarded.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..model import IVTuningModel, ModelConfig
from ..model.adapters.dra.modality_file import save_modality_file
from ..model.adapters.two_stream import ir_as_rgb
from ..model.config import PSSTConfig
from .batch import Augmentation, BatchBuilder


@dataclass
class ModalityOptions:
    steps: int = 200
    batch_size: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.05
    seed: int = 0
    workers: int = 0


class PSSTHeads(nn.Module):
    """Stage-1-only modules: the mask token, the reconstruction head and the distillation
    head (MLP to a bottleneck, L2-normalised, weight-normalised prototypes)."""

    def __init__(self, stem_dim: int, last_dim: int, psst: PSSTConfig) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(stem_dim))
        self.reconstruct = nn.Sequential(nn.Conv2d(last_dim, 32 * 32, 1), nn.PixelShuffle(32))
        self.project = nn.Sequential(
            nn.Linear(last_dim, psst.head_hidden), nn.GELU(),
            nn.Linear(psst.head_hidden, psst.head_hidden), nn.GELU(),
            nn.Linear(psst.head_hidden, psst.head_bottleneck))
        self.prototypes = nn.utils.parametrizations.weight_norm(
            nn.Linear(psst.head_bottleneck, psst.prototypes, bias=False))

    def distill(self, tokens: Tensor) -> Tensor:
        """(..., C) -> prototype logits (..., K)."""
        return self.prototypes(F.normalize(self.project(tokens), dim=-1))


def pretrain_modality(model: IVTuningModel, config: ModelConfig, dataset, out: str | Path,
                      options: ModalityOptions, data_name: str,
                      progress: bool = True) -> dict[str, float]:
    """Learn ``model.backbone.modality_lora`` on the IR of ``dataset`` and write
    ``out/modality.pth``; returns the last step's losses."""
    torch.manual_seed(options.seed)
    backbone = model.backbone
    psst = config.dra.psst
    backbone.frozen.requires_grad_(False)
    backbone.modality_lora.requires_grad_(True)
    heads = PSSTHeads(backbone.stage_dims[0], backbone.stage_dims[-1], psst)
    teacher = _Teacher(backbone.modality_lora, heads, psst)
    parameters = [*backbone.modality_lora.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / options.steps)))
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=True,
                        num_workers=options.workers,
                        collate_fn=BatchBuilder(config, Augmentation(), use_ir=True,
                                                seed=options.seed),
                        generator=torch.Generator().manual_seed(options.seed))
    warmup = int(psst.warmup_fraction * options.steps)
    generator = torch.Generator().manual_seed(options.seed)
    losses: dict[str, float] = {}
    bar = tqdm(total=options.steps, unit="step", desc="modality", disable=not progress)
    step = 0
    while step < options.steps:
        for batch in loader:
            if step >= options.steps:
                break
            loss, losses = _psst_loss(backbone, heads, teacher, batch.ir, psst,
                                      distill=step >= warmup, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            teacher.update(backbone.modality_lora, heads, step / max(1, options.steps - 1))
            step += 1
            bar.set_postfix(loss=f"{losses['loss']:.3f}")
            bar.update()
    bar.close()
    backbone.modality_lora.requires_grad_(False)
    save_modality_file(backbone, config, Path(out) / "modality.pth", data_name)
    return losses


class _Teacher:
    """EMA copies of the LoRA and the distillation head, and the output centres."""

    def __init__(self, lora: nn.Module, heads: PSSTHeads, psst: PSSTConfig) -> None:
        self.lora = copy.deepcopy(lora).requires_grad_(False)
        self.heads = copy.deepcopy(heads).requires_grad_(False)
        self.psst = psst
        self.center_image = torch.zeros(psst.prototypes)
        self.center_patch = torch.zeros(psst.prototypes)

    @torch.no_grad()
    def update(self, lora: nn.Module, heads: PSSTHeads, progress: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s, m from ema[0] to ema[1] on a cosine."""
        start, end = self.psst.ema
        momentum = end - (end - start) * (math.cos(math.pi * progress) + 1) / 2
        for teacher, student in ((self.lora, lora), (self.heads, heads)):
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    @torch.no_grad()
    def targets(self, logits: Tensor, image: bool) -> Tensor:
        """Centred, sharpened teacher probabilities; updates the centre (D5)."""
        center = self.center_image if image else self.center_patch
        probabilities = torch.softmax((logits - center) / self.psst.teacher_temp, dim=-1)
        m = self.psst.center_momentum
        center.mul_(m).add_(logits.reshape(-1, logits.shape[-1]).mean(0), alpha=1 - m)
        return probabilities


def _psst_loss(backbone: nn.Module, heads: PSSTHeads, teacher: _Teacher, ir: Tensor,
               psst: PSSTConfig, distill: bool,
               generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    ir3 = ir_as_rgb(ir)
    height, width = ir.shape[-2:]
    unit_mask = _unit_mask(ir.shape[0], height, width, psst, generator)
    tokens = backbone.ir_stream(ir3, _token_mask(unit_mask, psst.mask_unit, backbone),
                                heads.mask_token)
    prediction = heads.reconstruct(tokens.permute(0, 3, 1, 2))[..., :height, :width]
    errors = F.avg_pool2d((prediction - ir[:, :1]).square(), psst.mask_unit,
                          ceil_mode=True)[:, 0]  # e_i per unit (D3)
    mae = errors[unit_mask].mean()
    losses = {"mae": mae.item()}
    loss = psst.lambda_mae * mae
    if distill:
        complexity = torch.stack([e[m].var() if m.sum() > 1 else e.new_zeros(())
                                  for e, m in zip(errors.detach(), unit_mask, strict=True)])
        keep = complexity >= torch.quantile(complexity, 1 - psst.high_fraction)  # D4
        image, patch = _distillation(backbone, heads, teacher, ir3[keep], tokens[keep],
                                     errors.detach()[keep], unit_mask[keep], psst, generator)
        loss = loss + image + patch
        losses.update(image=image.item(), patch=patch.item())
    losses["loss"] = loss.item()
    return loss, losses


def _distillation(backbone: nn.Module, heads: PSSTHeads, teacher: _Teacher, ir3: Tensor,
                  masked_tokens: Tensor, errors: Tensor, unit_mask: Tensor, psst: PSSTConfig,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Image-level DINO loss over two views, both ways (D5), and the error-weighted
    patch-level loss on the masked units (D6-D7)."""
    crop = _random_crop(ir3, generator)
    with torch.no_grad():
        whole_t = backbone.ir_stream(ir3, lora=teacher.lora)
        crop_t = backbone.ir_stream(crop, lora=teacher.lora)
        target_whole = teacher.targets(teacher.heads.distill(whole_t.mean((1, 2))), True)
        target_crop = teacher.targets(teacher.heads.distill(crop_t.mean((1, 2))), True)
        target_patch = teacher.targets(teacher.heads.distill(whole_t), False)
    crop_s = backbone.ir_stream(crop)

    def student(tokens: Tensor) -> Tensor:
        return torch.log_softmax(heads.distill(tokens) / psst.student_temp, dim=-1)

    image = (_cross_entropy(target_whole, student(crop_s.mean((1, 2)))).mean()
             + _cross_entropy(target_crop, student(masked_tokens.mean((1, 2)))).mean())
    per_patch = _cross_entropy(target_patch, student(masked_tokens))  # (B, H3, W3)
    weights = _unit_weights(errors, unit_mask, psst.alpha_weight)
    tokens_per_unit = psst.mask_unit // 32
    weights = weights.repeat_interleave(tokens_per_unit, 1).repeat_interleave(
        tokens_per_unit, 2)[:, :per_patch.shape[1], :per_patch.shape[2]]
    patch = (weights * per_patch).sum((1, 2)).mean()
    return image, patch


def _unit_weights(errors: Tensor, unit_mask: Tensor, alpha: float) -> Tensor:
    """w_i = softmax over an image's masked units of alpha * z-score(e_i) (D6); 0 elsewhere."""
    weights = torch.zeros_like(errors)
    for index, (e, m) in enumerate(zip(errors, unit_mask, strict=True)):
        masked = e[m]
        score = (masked - masked.mean()) / (masked.std() + 1e-6) if masked.numel() > 1 else \
            torch.zeros_like(masked)
        weights[index][m] = torch.softmax(alpha * score, dim=0)
    return weights


def _cross_entropy(target: Tensor, log_student: Tensor) -> Tensor:
    return -(target * log_student).sum(-1)


def _unit_mask(batch: int, height: int, width: int, psst: PSSTConfig,
               generator: torch.Generator) -> Tensor:
    """G (D1): True for masked units, ``mask_ratio`` of each image's units."""
    rows, cols = math.ceil(height / psst.mask_unit), math.ceil(width / psst.mask_unit)
    count = max(1, round(psst.mask_ratio * rows * cols))
    order = torch.rand(batch, rows * cols, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, rows * cols, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(batch, rows, cols)


def _token_mask(unit_mask: Tensor, unit: int, backbone: nn.Module) -> Tensor:
    """The unit mask on the stem's token grid (patch-size tokens)."""
    per_unit = unit // backbone.patch_size
    return unit_mask.repeat_interleave(per_unit, 1).repeat_interleave(per_unit, 2)


def _random_crop(images: Tensor, generator: torch.Generator) -> Tensor:
    """A random crop of 40-100% of the area, resized back to the frame size (a second
    global view, D5)."""
    height, width = images.shape[-2:]
    scale = 0.4 + 0.6 * torch.rand((), generator=generator).item()
    crop_h, crop_w = max(32, round(height * scale ** 0.5)), max(32, round(width * scale ** 0.5))
    top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
    crop = images[..., top:top + crop_h, left:left + crop_w]
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
