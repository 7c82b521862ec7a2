"""The DRA modality file: the IR modality LoRA learnt once (stage 1), with the
fingerprints and IR preprocessing it depends on. One file per modality, shared by every
task model built on the same frozen Swin."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ...config import InputConfig, ModelConfig
from ...weights import WeightsError, load_file, state_fingerprint
from .backbone import DRASwin

FORMAT, VERSION = "ivtuning-modality", 1


def ir_preprocessing(config: InputConfig) -> dict:
    """The IR preprocessing a modality LoRA was learnt with (a task must use the same)."""
    return {key: getattr(config, key) for key in
            ("ir_agc", "ir_percentiles", "ir_fixed_range", "ir_mean", "ir_std")}


def modality_fingerprint(backbone: DRASwin) -> str:
    return state_fingerprint(backbone.modality_lora.state_dict())


def save_modality_file(backbone: DRASwin, config: ModelConfig, path: str | Path,
                       data: str) -> None:
    """Write the modality LoRA, the frozen Swin's fingerprint and the IR preprocessing;
    ``data`` names what it was learnt on (e.g. 'synthetic IR')."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": FORMAT, "version": VERSION,
        "state_dict": backbone.modality_lora.state_dict(),
        "fingerprint": modality_fingerprint(backbone),
        "base_fingerprint": state_fingerprint(backbone.swin.state_dict()),
        "base_weights": config.backbone.weights,
        "ir_preprocessing": ir_preprocessing(config.input),
        "backbone": dataclasses.asdict(config.backbone),
        "lora": {"rank": config.dra.lora_rank, "alpha": config.dra.lora_alpha},
        "data": data,
    }, path)


def load_modality_file(backbone: DRASwin, config: ModelConfig, path: str | Path) -> None:
    """Load a modality file into ``backbone.modality_lora`` after checking that it was learnt
    on this frozen Swin and with this model's IR preprocessing."""
    payload = load_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"'{path}' is not a DRA modality file (write one with "
                           "`ivtuning train --stage modality`)")
    base = state_fingerprint(backbone.swin.state_dict())
    if payload["base_fingerprint"] != base:
        raise WeightsError(
            f"modality file '{path}' was learnt on frozen Swin weights "
            f"{payload['base_fingerprint']} (file {payload['base_weights']!r}), but this "
            f"model's Swin is {base} (file {config.backbone.weights!r}); learn the modality "
            "again on this Swin, or set backbone.weights to the one it was learnt on")
    expected = ir_preprocessing(config.input)
    if payload["ir_preprocessing"] != expected:
        raise WeightsError(
            f"modality file '{path}' was learnt with IR preprocessing "
            f"{payload['ir_preprocessing']}, this model uses {expected}: use the same input.ir_* "
            "settings")
    try:
        backbone.modality_lora.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise WeightsError(f"modality file '{path}' does not fit dra.lora_rank / the Swin "
                           f"variant of this config: {exc}") from exc
