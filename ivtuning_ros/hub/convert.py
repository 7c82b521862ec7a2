"""A verified publisher file -> the project's layout, written into the cache.

The converters are the project's own (`ivtuning convert`'s): Swin checkpoints go to
torchvision layout and are checked against the entry's config; timm files are checked
by timm's conversion into the config's ViT and kept as they are (timm converts them again
on loading); an mmdet DINO detector becomes a full ivtuning checkpoint of the entry's
config, IV-tuning's parts untrained (s3/s4 zero: the detector's outputs exactly).
The cache file and its manifest are written beside their final names and renamed into
place last, so an interrupted conversion leaves nothing that counts as cached.
"""
from __future__ import annotations

import datetime
import json
import os
import warnings
from pathlib import Path

import torch

from ..model import ModelConfig, build_backbone, build_model, load_config, save_checkpoint
from ..model.backbones.swin_weights import load_swin_state, to_torchvision_layout
from ..model.backbones.vit_weights import load_vit_state
from ..model.checkpoint import record_training
from ..model.heads.dino_weights import load_mmdet_dino
from ..model.weights import StateDict, WeightsError, read_checkpoint
from .cache import cached_file, manifest_file
from .catalog import WeightsEntry


def read_source(path: Path) -> StateDict:
    """A publisher's file: safetensors (the hub's) or a torch checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"'{path}' is not a readable safetensors file: {exc}") from exc
    return read_checkpoint(path)


def convert_into_cache(entry: WeightsEntry, source: Path, models_dir: Path,
                       record: dict) -> tuple[Path, str]:
    """Convert ``source`` (verified) for ``entry`` into the cache; returns (cached file,
    one line saying what was done). ``record`` goes into the manifest."""
    config = load_config(models_dir / entry.configs[0])
    destination = cached_file(entry)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    manifest_partial = manifest_file(entry).with_suffix(".json.partial")
    try:
        done, record = _convert(entry, read_source(source), config, partial, record)
        manifest = {"name": entry.name, "source": entry.location, "file_name": entry.file_name,
                    "converter": entry.converter, "config": entry.configs[0],
                    "converted": done,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    **record}
        manifest_partial.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(partial, destination)
        os.replace(manifest_partial, manifest_file(entry))
    finally:
        partial.unlink(missing_ok=True)
        manifest_partial.unlink(missing_ok=True)
    return destination, done


def _meta_backbone(config: ModelConfig) -> torch.nn.Module:
    """The config's backbone without memory: checking a checkpoint against it needs names
    and shapes only (even SAM-H builds at once)."""
    with torch.device("meta"):
        return build_backbone(config, load_weights=False)


def _convert(entry: WeightsEntry, state: StateDict, config: ModelConfig, partial: Path,
             record: dict) -> tuple[str, dict]:
    """Check ``state`` against ``config`` and write the project's file to ``partial``."""
    with warnings.catch_warnings():  # loading into meta tensors is the point of the check
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        if entry.converter == "swin":
            converted = to_torchvision_layout(state)
            load_swin_state(_meta_backbone(config), converted)
        elif entry.converter == "vit":
            converted = dict(state)
            load_vit_state(_meta_backbone(config).vit, dict(state))
    if entry.converter == "swin":
        torch.save(converted, partial)
        done = f"{len(converted)} tensors in torchvision Swin layout, fit {config.name}"
    elif entry.converter == "vit":
        torch.save(converted, partial)
        done = f"{len(state)} tensors in timm layout, fit {config.name}"
    else:
        model = build_model(config, load_weights=False)
        result = load_mmdet_dino(model, state)
        record_training(model, "coco(mmdet)")  # the node reports weights_trained_on: coco
        save_checkpoint(model, config, partial)
        done = (f"full {config.name} checkpoint from {result.loaded} detector tensors "
                "(IV-tuning's prompter untrained: s3/s4 zero)")
        record = {**record, "not_in_checkpoint": result.not_in_checkpoint}
    return done, record
