"""IV-tuning training: only the IR embedding, the prompter and the heads learn.

One loop serves a single process and ``torchrun`` (DistributedDataParallel; NCCL on
GPUs, gloo on CPUs). AdamW (or SGD) with linear warm-up and cosine (or poly) decay over
a number of epochs (or iterations), gradient clipping,
AMP on CUDA, optional gradient checkpointing; adapter checkpoints and a training
state for resuming; CSV and TensorBoard logs; a progress bar. At the end the frozen
Swin is verified bit-identical to what it was at the start, and under DDP every rank
is verified to hold the same trainable weights.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..model import IVTuningModel, ModelConfig, save_checkpoint
from ..model.checkpoint import frozen_fingerprints, record_training
from .batch import IGNORE, Augmentation, BatchBuilder
from .criterion import SetCriterion
from .denoising import DenoisingConfig, make_denoising_queries
from .matcher import HungarianMatcher

STATE_FILE = "train_state.pth"
CHECKPOINT_FILE = "last.pth"


@dataclass
class TrainOptions:
    """How to train. ``train_backbone`` trains the whole Swin too (the visible-light
    pre-training that stands in for a public checkpoint); IV-tuning leaves it False."""

    epochs: int = 12
    iterations: int | None = None  # when set, the length instead of ``epochs``
    batch_size: int = 2
    optimizer: str = "adamw"  # "adamw" | "adam" | "sgd" (momentum 0.9)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # after warm-up: "cosine" | "poly" (power 1)
    warmup_steps: int = 100
    grad_clip: float = 0.1
    train_backbone: bool = False
    heads_only: bool = False  # the heads alone: IR embedding and prompter frozen too
    use_ir: bool = True
    gradient_checkpointing: bool = False
    augmentation: Augmentation = field(default_factory=Augmentation)
    denoising: DenoisingConfig = field(default_factory=DenoisingConfig)
    workers: int = 0
    seed: int = 0
    out_dir: str = "out/train"


def train(model: IVTuningModel, config: ModelConfig, dataset, options: TrainOptions,
          device: torch.device, resume: bool = False, progress: bool = True) -> dict:
    """Train ``model`` in place on ``dataset`` (a sequence of `Sample`s); return the last
    losses. Writes ``last.pth`` (an adapter checkpoint, or a full one when the backbone
    trains), ``train_state.pth``, ``log.csv`` and TensorBoard events into ``out_dir``."""
    rank, world, device = _setup_distributed(device)
    torch.manual_seed(options.seed)
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    core = model.to(device)
    core.train()
    # Checkpoints name the data their weights learnt from: `ivtuning perceive` warns about
    # synthetic-only weights and the node's /diagnostics reports the kind.
    record_training(core, getattr(dataset, "name", type(dataset).__name__))
    _set_trainable(core, options)
    parameters = [p for p in core.parameters() if p.requires_grad]
    optimizer = _optimizer(parameters, options)
    sampler = DistributedSampler(dataset, world, rank, seed=options.seed) if world > 1 else None
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=sampler is None,
                        sampler=sampler, num_workers=options.workers,
                        collate_fn=BatchBuilder(config, options.augmentation, options.use_ir,
                                                seed=options.seed + rank),
                        generator=torch.Generator().manual_seed(options.seed))
    total_steps = options.iterations or options.epochs * len(loader)
    epochs = math.ceil(total_steps / len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(
        step, options.warmup_steps, total_steps, options.schedule))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    start_epoch = (load_training_state(out / STATE_FILE, core, optimizer, scheduler,
                                       scaler)["epoch"] if resume else 0)
    # DDP starts by copying rank 0's weights to every rank: fingerprint the frozen parts after.
    trained = DistributedDataParallel(core, find_unused_parameters=True) if world > 1 else core
    frozen_before = None if options.train_backbone else frozen_fingerprints(core)
    criterion = _criterion(config)
    log = _Log(out, enabled=rank == 0)
    losses: dict[str, float] = {}
    bar = tqdm(total=total_steps, initial=start_epoch * len(loader), unit="step",
               desc="train", disable=not progress or rank != 0)
    for epoch in range(start_epoch, epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            if scheduler.last_epoch >= total_steps:
                break  # --iterations ends inside an epoch
            losses = _step(trained, core, criterion, optimizer, scaler, batch.to(device),
                           config, options, device)
            scheduler.step()
            log.write(scheduler.last_epoch, epoch, losses, scheduler.get_last_lr()[0])
            bar.set_postfix(loss=f"{losses['loss']:.3f}")
            bar.update()
        if rank == 0:
            _save(out, core, config, options, optimizer, scheduler, scaler, epoch + 1)
    bar.close()
    log.close()
    _verify(core, frozen_before, world)
    if world > 1:
        dist.destroy_process_group()
    return losses


def _step(trained: nn.Module, core: IVTuningModel, criterion: SetCriterion, optimizer,
          scaler, batch, config: ModelConfig, options: TrainOptions,
          device: torch.device) -> dict[str, float]:
    denoising = None
    if core.detection is not None:
        denoising = make_denoising_queries(batch.targets, core.detection.label_embedding,
                                           len(config.detection.classes),
                                           config.detection.num_queries, options.denoising)
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        outputs = trained(batch.rgb, batch.ir, denoising=denoising,
                          valid_sizes=batch.valid_sizes)
    losses = criterion(_to_float(outputs), batch.targets, denoising=denoising,
                       seg_targets=batch.masks if core.segmentation is not None else None,
                       sod_targets=batch.saliency if core.sod is not None else None)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in core.parameters() if p.requires_grad],
                                   options.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return {name: float(value.detach()) for name, value in losses.items()}


def _to_float(outputs):
    """AMP outputs back to float32 for the losses."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_to_float(v) for v in outputs]
    return outputs


def _criterion(config: ModelConfig) -> SetCriterion:
    classes = len(config.detection.classes) if config.detection else 1
    return SetCriterion(classes, HungarianMatcher(), seg_ignore_index=IGNORE)


def _set_trainable(model: IVTuningModel, options: TrainOptions) -> None:
    for module in model.backbone.frozen_modules():
        module.requires_grad_(options.train_backbone)
    if options.heads_only:
        # Eval mode too: the prompter's BatchNorm statistics must not move either.
        model.backbone.requires_grad_(False)
        model.backbone.eval()
    if options.gradient_checkpointing and not hasattr(model.backbone, "gradient_checkpointing"):
        raise ValueError(f"--checkpointing is implemented for IV-tuning backbones, not for "
                         f"{type(model.backbone).__name__}")
    if hasattr(model.backbone, "gradient_checkpointing"):
        model.backbone.gradient_checkpointing = options.gradient_checkpointing


def _optimizer(parameters: list[nn.Parameter], options: TrainOptions) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=options.lr, momentum=0.9,
                               weight_decay=options.weight_decay)
    if options.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    if options.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=options.lr, weight_decay=options.weight_decay)
    raise ValueError(f"optimizer must be adamw, adam or sgd, got '{options.optimizer}'")


def _lr_factor(step: int, warmup: int, total: int, schedule: str = "cosine") -> float:
    """Linear warm-up to 1, then decay to 0.01 at ``total``: cosine, or poly (power 1, as
    mmseg's SegFormer schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "poly":
        return 0.01 + 0.99 * (1 - progress)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def _setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), world, device


def _save(out: Path, model: IVTuningModel, config: ModelConfig, options: TrainOptions,
          optimizer, scheduler, scaler, epoch: int) -> None:
    save_checkpoint(model, config, out / CHECKPOINT_FILE, adapter=not options.train_backbone)
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "options": asdict(options)}, out / STATE_FILE)


def load_training_state(path: Path, model: nn.Module, optimizer, scheduler,
                        scaler=None) -> dict:
    """Restore a run's model, optimiser, schedule (and AMP scaler) from its state file;
    returns the whole state (its step or epoch counter included)."""
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: '{path}' does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    return state


def _verify(model: IVTuningModel, frozen_before: dict[str, str] | None, world: int) -> None:
    if frozen_before is not None:
        changed = [name for name, fingerprint in frozen_fingerprints(model).items()
                   if frozen_before[name] != fingerprint]
        if changed:
            raise RuntimeError(f"the frozen {', '.join(changed)} changed during training: a "
                               "bug, not a setting")
    if world > 1:
        digest = hashlib.sha256()
        for name, tensor in sorted(model.named_parameters()):
            if tensor.requires_grad:
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
        digests = [None] * world
        dist.all_gather_object(digests, digest.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks hold different trainable weights: {digests}")
        if dist.get_rank() == 0:
            print(f"trainable weights identical on {world} ranks ({digests[0][:16]})")


class _Log:
    """CSV and TensorBoard logs of every step's losses and learning rate (rank 0).

    A loss first seen after the start (denoising losses need a batch with boxes) widens
    the CSV: the file is rewritten with the new column, earlier rows leave it empty."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self._path = out / "log.csv"
        self._file = self._writer = self._csv = None
        if enabled:
            self._writer = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, epoch: int, losses: dict[str, float], lr: float) -> None:
        if not self.enabled:
            return
        row = {"step": step, "epoch": epoch, "lr": lr, **losses}
        if self._csv is None or not set(row) <= set(self._csv.fieldnames):
            self._open(row)
        self._csv.writerow(row)
        for name, value in losses.items():
            self._writer.add_scalar(f"train/{name}", value, step)
        self._writer.add_scalar("train/lr", lr, step)

    def _open(self, row: dict) -> None:
        """(Re)open the CSV with every column so far (a resumed run's included)."""
        if self._file is not None:
            self._file.close()
        rows = []
        if self._path.is_file() and self._path.stat().st_size:
            with open(self._path, newline="") as file:
                rows = list(csv.DictReader(file))
        known = list(rows[0]) if rows else ["step", "epoch", "lr"]
        fields = known + sorted(set(row) - set(known))
        self._file = open(self._path, "w", newline="")  # noqa: SIM115
        self._csv = csv.DictWriter(self._file, fields, restval="")
        self._csv.writeheader()
        self._csv.writerows(rows)

    def close(self) -> None:
        if self.enabled:
            if self._file is not None:
                self._file.close()
            self._writer.close()
