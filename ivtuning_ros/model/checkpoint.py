"""Model checkpoints: one file = config + tensors.

* full: every tensor of the model.
* adapter: only what IV-tuning trains (IR embedding, prompter, output norms,
  heads) plus a fingerprint of the frozen backbone weights it was trained on: the
  paper's storage argument (one backbone, n small task files). Loading an
  adapter over different frozen weights fails instead of silently degrading.

Both record ``trained_on``: the names of the datasets the weights learnt from, oldest
first (``synthetic(seed=0)``, ``m3fd(/data/m3fd)``; `record_training`). A loaded model
keeps the record as its ``trained_on`` attribute, so that re-saving it (`ivtuning
export`, an ``--init`` for more training) carries it on.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from ..hub.cache import resolve
from .config import ModelConfig, apply_overrides, config_from_dict, load_config
from .model import IVTuningModel, build_model
from .weights import WeightsError, list_keys, load_file, state_fingerprint

FULL, ADAPTER = "ivtuning-full", "ivtuning-adapter"
FORMAT_VERSION = 1
TRAINED_ON = "trained_on"  # payload key and model attribute
SYNTHETIC = "synthetic"  # the kind of `SyntheticDataset`'s names, ``synthetic(seed=0)``
# Checkpoints written before the record existed hold nothing that names their data. The
# one the project published, models/ivt_demo.pth, was made by `make demo-weights` on
# synthetic scenes only: its config name and tensor fingerprints (one per committed
# revision) say it is that file.
UNRECORDED_SYNTHETIC = {"ivt_demo": {"6cea6a8a03d934da", "4a9e556cf4adb42e"}}


def frozen_prefix(model: IVTuningModel) -> str:
    """State-dict prefix of the frozen foundation model's tensors."""
    return f"backbone.{model.backbone.frozen_name}."


def adapter_state(model: IVTuningModel) -> dict[str, Tensor]:
    """Every tensor outside the frozen model and the method's reusable parts (trainable
    parameters and their buffers)."""
    prefixes = (frozen_prefix(model),
                *(f"backbone.{name}." for name in model.backbone.reusable_parts()))
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}


def base_fingerprint(model: IVTuningModel) -> str:
    """The fingerprint of the frozen model's tensors (`state_fingerprint`)."""
    return state_fingerprint(model.backbone.frozen.state_dict())


def frozen_fingerprints(model: IVTuningModel) -> dict[str, str]:
    """Fingerprints of everything a task's training leaves untouched: the frozen base and
    the method's reusable parts (DRA's modality LoRA)."""
    return {"base": base_fingerprint(model),
            **{name: state_fingerprint(module.state_dict())
               for name, module in model.backbone.reusable_parts().items()}}


def trained_on(model: IVTuningModel) -> list[str]:
    """The names of the datasets ``model``'s weights learnt from, oldest first; empty when
    unknown (an untrained or converted model, or a checkpoint from before the record)."""
    return list(getattr(model, TRAINED_ON, []))


def record_training(model: IVTuningModel, dataset_name: str) -> None:
    """Add a dataset to ``model``'s record (training calls it; a resumed run adds nothing)."""
    history = trained_on(model)
    if dataset_name not in history:
        history.append(dataset_name)
    setattr(model, TRAINED_ON, history)


def training_data(names: list[str]) -> str:
    """The kinds of data of a record, one word each: ``synthetic``, ``synthetic+m3fd``;
    ``unknown`` for an empty record."""
    kinds = dict.fromkeys(name.split("(")[0] for name in names)  # ordered, unique
    return "+".join(kinds) or "unknown"


def synthetic_only(names: list[str]) -> bool:
    """Whether a record names synthetic scenes and nothing else: such weights find little
    or nothing in real images."""
    return training_data(names) == SYNTHETIC


def save_checkpoint(model: IVTuningModel, config: ModelConfig, path: str | Path, *,
                    adapter: bool = False, half: bool = False) -> None:
    """Write a full checkpoint, or with ``adapter=True`` only the trained tensors, with
    the model's `trained_on` record.

    ``half`` stores floating-point tensors as fp16 (half the file; loading casts back).
    """
    payload = {"format": ADAPTER if adapter else FULL, "version": FORMAT_VERSION,
               "config": config.to_dict(), TRAINED_ON: trained_on(model)}
    if adapter:
        payload["state_dict"] = adapter_state(model)
        payload["base_fingerprint"] = base_fingerprint(model)
        payload["base_weights"] = config.backbone.weights
        payload["reusable_fingerprints"] = {
            name: fingerprint for name, fingerprint in frozen_fingerprints(model).items()
            if name != "base"}
    else:
        payload["state_dict"] = model.state_dict()
    if half:
        payload["state_dict"] = {k: v.half() if v.is_floating_point() else v
                                 for k, v in payload["state_dict"].items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_checkpoint(path: str | Path, *,
                    base_weights: str | None = None) -> tuple[IVTuningModel, ModelConfig]:
    """Rebuild a model from a full or adapter checkpoint (on CPU).

    For an adapter, the frozen backbone comes from ``base_weights`` if given, else
    from the weights file recorded in its config; its fingerprint must match. ``path``
    may be a weights catalogue name (``dino_swin_l_coco``), taken from the cache.
    """
    path = resolve(str(path))
    payload = _read(Path(path))
    config = config_from_dict(payload["config"])
    if payload["format"] == FULL:
        model = build_model(config, load_weights=False)
        _load_exact(model, payload["state_dict"], path)
        setattr(model, TRAINED_ON, _recorded_data(payload, config))
        return model, config
    if base_weights is not None:
        config.backbone.weights = base_weights
    model = build_model(config)
    found = base_fingerprint(model)
    if found != payload["base_fingerprint"]:
        raise WeightsError(
            f"adapter '{path}' was trained on frozen backbone weights "
            f"{payload['base_fingerprint']} "
            f"(file {payload['base_weights']!r}), but the loaded base is {found} "
            f"(file {config.backbone.weights!r}); pass the matching backbone weights as the base"
        )
    found = frozen_fingerprints(model)
    for name, fingerprint in payload.get("reusable_fingerprints", {}).items():
        if found[name] != fingerprint:
            raise WeightsError(
                f"adapter '{path}' was trained over {name} {fingerprint}, but the loaded one is "
                f"{found[name]} (dra.modality_lora {_modality_file(config)!r}); set it to the "
                "modality file the task was trained with")
    trained = adapter_state(model)
    kept = {k: v for k, v in model.state_dict().items() if k not in trained}
    _load_exact(model, {**kept, **payload["state_dict"]}, path)
    setattr(model, TRAINED_ON, _recorded_data(payload, config))
    return model, config


def _recorded_data(payload: dict, config: ModelConfig) -> list[str]:
    """A checkpoint's `trained_on` record; for one from before the record, the
    `UNRECORDED_SYNTHETIC` rule (the fingerprint only hashes files that claim the name)."""
    if TRAINED_ON in payload:
        return list(payload[TRAINED_ON])
    known = UNRECORDED_SYNTHETIC.get(config.name, set())
    if known and state_fingerprint(payload["state_dict"]) in known:
        return [SYNTHETIC]
    return []


def load_checkpoint_as(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                       seed: int | None = None) -> tuple[IVTuningModel, ModelConfig]:
    """A checkpoint's model, or with ``overrides`` (e.g. ``method=cpal``) a model of the
    changed config that takes every tensor it shares with the checkpoint (same name and
    shape: the frozen backbone, output norms, heads); the rest starts as built, from
    ``seed`` when given (the same draws as ``torch.manual_seed(seed); build_model``)."""
    model, config = load_checkpoint(path)
    if not overrides:
        return model, config
    config = config_from_dict(apply_overrides(config.to_dict(), overrides))
    source = model.state_dict()
    history = trained_on(model)
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(config, load_weights=False)
    target = model.state_dict()
    model.load_state_dict({k: v for k, v in source.items()
                           if k in target and target[k].shape == v.shape}, strict=False)
    setattr(model, TRAINED_ON, history)  # the shared tensors keep what they learnt
    return model, config


def export_base(model: IVTuningModel, config: ModelConfig, out: str | Path) -> None:
    """Write the model's frozen backbone to ``out/base_<name>.pth`` and make it the config's
    ``backbone.weights``: the base file adapter checkpoints are fingerprinted against."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = (out / f"base_{model.backbone.frozen_name}.pth").resolve()
    torch.save(model.backbone.frozen.state_dict(), path)
    config.backbone.weights = str(path)


def _modality_file(config: ModelConfig) -> str | None:
    return config.dra.modality_lora if config.dra else None


def _read(path: Path) -> dict:
    try:
        payload = load_file(path)
    except WeightsError as exc:
        if exc.__cause__ is None:  # no such file: load_file's message says so
            raise
        raise _not_a_checkpoint(path, _unreadable(path, exc.__cause__)) from None
    if not isinstance(payload, dict) or payload.get("format") not in (FULL, ADAPTER):
        raise _not_a_checkpoint(path, "a torch file without ivtuning's format tag, e.g. "
                                "Swin or mmdet weights")
    if payload.get("version") != FORMAT_VERSION:
        raise WeightsError(f"checkpoint '{path}' has format version {payload.get('version')}; "
                           f"this ivtuning_ros reads version {FORMAT_VERSION}")
    return payload


def _not_a_checkpoint(path: Path, reason: str) -> WeightsError:
    return WeightsError(f"{path} is not an ivtuning_ros checkpoint ({reason}): pass a .pth "
                        "written by `ivtuning train`/`ivtuning export` or `ivtuning convert`")


def _unreadable(path: Path, exc: BaseException) -> str:
    """Why torch.load refused ``path``, in a few words: torch's own message spans lines and,
    for any foreign file, talks of ``weights_only``."""
    if not zipfile.is_zipfile(path):
        return "not a zip archive as torch.save writes, or a truncated one"
    detail = str(exc).split("WeightsUnpickler error:")[-1]
    detail = re.sub(r"^\s*\[enforce fail at [^]]*\][ .]*", "", detail)  # C++ source location
    return f"torch.load: {(detail.strip() or type(exc).__name__).splitlines()[0].split('. ')[0]}"


def _load_exact(model: IVTuningModel, state: dict[str, Tensor], path: str | Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError("; ".join([
            list_keys(f"checkpoint '{path}' does not fit its own config: missing", missing),
            list_keys("unexpected", unexpected),
            list_keys("wrong shape", wrong),
        ]))
    model.load_state_dict(state)


def load_model(config_path: str | Path | None, checkpoint: str | Path | None, *,
               base_weights: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               ) -> tuple[IVTuningModel, ModelConfig, bool]:
    """The model a user names: a checkpoint (its stored config wins), else a config file.

    Returns (model, config, trained). A config without a checkpoint gives untrained
    heads and prompter; a config named next to a checkpoint must name the same model.
    """
    if checkpoint:
        model, config = load_checkpoint(checkpoint, base_weights=base_weights)
        if config_path and load_config(config_path, overrides).name != config.name:
            raise ValueError(f"checkpoint '{checkpoint}' holds model '{config.name}', not "
                             f"the one of config '{config_path}'")
        return model, config, True
    if not config_path:
        raise ValueError("no model given: pass a model config (--config: untrained heads) "
                         "or a checkpoint (--checkpoint)")
    config = load_config(config_path, overrides)
    return build_model(config), config, False


def add_head(base: str | Path, trained: str | Path, head: str, out: str | Path) -> None:
    """Write ``out``: the full checkpoint ``base`` plus the head ``head`` (e.g. "sod") of the
    checkpoint ``trained``, a model with that head on the same backbone and adapter (as
    ``ivtuning train --init base --set sod=... --heads-only`` makes one). Every tensor of
    ``base`` is written back unchanged (same dtype, bit for bit); the head's tensors take
    base's floating-point dtype; the config gains the head's section; the training record
    is base's plus trained's."""
    base_payload = _read(Path(base))
    if base_payload["format"] != FULL:
        raise WeightsError(f"'{base}' is an adapter checkpoint; add_head needs a full one "
                           f"(ivtuning export)")
    model, config = load_checkpoint(trained)
    if getattr(config, head, None) is None:
        raise WeightsError(f"checkpoint '{trained}' has no '{head}' head")
    base_model, base_config = load_checkpoint(base)
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{head}.")}
    base_state = base_payload["state_dict"]
    changed = [k for k, v in shared.items() if k in base_state and not torch.equal(
        v.to(base_state[k].dtype), base_state[k])]
    if changed:
        raise WeightsError(f"'{trained}' changed {len(changed)} tensors of '{base}' (e.g. "
                           f"{changed[0]}): train the head alone (--heads-only)")
    dtype = next(v.dtype for v in base_state.values() if v.is_floating_point())
    head_state = {k: v.to(dtype) if v.is_floating_point() else v
                  for k, v in model.state_dict().items() if k.startswith(f"{head}.")}
    payload = dict(base_payload)
    payload["config"] = {**base_payload["config"], head: config.to_dict()[head]}
    payload["state_dict"] = {**base_state, **head_state}
    payload[TRAINED_ON] = list(dict.fromkeys([*trained_on(base_model), *trained_on(model)]))
    out = Path(out)
    partial = out.with_suffix(out.suffix + ".partial")
    torch.save(payload, partial)
    partial.replace(out)
