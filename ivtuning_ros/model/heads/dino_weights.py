"""mmdet DINO detector checkpoints -> this project's model keys.

The key map comes from REFERENCE_FACTS.md section 4.2 (mmdet 3.x DINO with a
Swin backbone). The Swin part goes through `mmdet_swin_to_torchvision`; every
other key is renamed by the table below. A key with no place is an error.

Both DINO-5scale (neck on Swin stages 0-3 + 1 extra level) and DINO-4scale
(stages 1-3 + 1 extra level) checkpoints load, and so do checkpoints without a
backbone: what the checkpoint lacks on the backbone side stays at its
initialisation and is reported, what it lacks of the detection head is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..backbones.swin_weights import mmdet_swin_to_torchvision
from ..weights import StateDict, WeightsError, list_keys

# (mmdet pattern, our key). Layer-level names: mmcv's FFN `layers.0.0` / `layers.1`
# are our linear1 / linear2, `norms.{k}` our norm{k+1}, the MHA wrapper's `attn.` is dropped.
_LAYER_PARTS = [
    (r"self_attn\.attn\.(.+)", r"self_attn.\1"),
    (r"(self_attn|cross_attn)\.(.+)", r"\1.\2"),
    (r"ffn\.layers\.0\.0\.(\w+)", r"ffn.linear1.\1"),
    (r"ffn\.layers\.1\.(\w+)", r"ffn.linear2.\1"),
    (r"norms\.(\d)\.(\w+)", lambda m: f"norm{int(m[1]) + 1}.{m[2]}"),
]
_HEAD_RULES = [
    (r"neck\.((?:extra_)?convs\.\d+\.(?:conv|gn)\.\w+)", r"detection.neck.\1"),
    (r"(level_embed|query_embedding\.weight|memory_trans_(?:fc|norm)\.\w+)", r"detection.\1"),
    (r"decoder\.ref_point_head\.layers\.(\d)\.(\w+)", r"detection.ref_point_head.layers.\1.\2"),
    (r"decoder\.norm\.(\w+)", r"detection.decoder_norm.\1"),
    (r"bbox_head\.cls_branches\.(\d+)\.(\w+)", r"detection.cls_branches.\1.\2"),
    (r"bbox_head\.reg_branches\.(\d+)\.([024])\.(\w+)",
     lambda m: f"detection.reg_branches.{m[1]}.layers.{int(m[2]) // 2}.{m[3]}"),
    (r"dn_query_generator\.label_embedding\.weight", "detection.label_embedding.weight"),
]
_TRAINING_ONLY = re.compile(r"^data_preprocessor\.")


def is_mmdet_detector(state: StateDict) -> bool:
    """True for a whole mmdet DINO checkpoint (not a bare Swin backbone)."""
    return any(k.startswith(("bbox_head.", "encoder.layers.")) for k in state)


def _rename_layer(key: str) -> str | None:
    match = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)", key)
    if not match:
        return None
    for pattern, replacement in _LAYER_PARTS:
        part = re.fullmatch(pattern, match[3])
        if part:
            rest = replacement(part) if callable(replacement) else part.expand(replacement)
            return f"detection.{match[1]}.{match[2]}.{rest}"
    return None


def _rename_head(key: str) -> str | None:
    for pattern, replacement in _HEAD_RULES:
        match = re.fullmatch(pattern, key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    return _rename_layer(key)


def mmdet_dino_to_ours(state: StateDict) -> StateDict:
    """A whole mmdet DINO state dict -> our `IVTuningModel` keys (backbone and detection)."""
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    out = {f"backbone.{'swin.' if k.startswith('features.') else ''}{k}": v
           for k, v in mmdet_swin_to_torchvision(backbone).items()}
    unplaced = []
    for key, value in state.items():
        if key.startswith("backbone.") or _TRAINING_ONLY.match(key):
            continue
        new_key = _rename_head(key)
        if new_key is None:
            unplaced.append(key)
        else:
            out[new_key] = value
    if unplaced:
        raise WeightsError(list_keys("mmdet DINO checkpoint has keys with no place in this "
                                     "model", unplaced))
    return out


# What an mmdet DINO checkpoint cannot hold: IV-tuning's own parts (kept at their
# initialisation; s3/s4 start at zero, so the model reproduces the detector), the
# segmentation head, and buffers we rebuild.
_NOT_IN_DETECTOR = re.compile(
    r"^(backbone\.(ir_patch_embed|mp_alpha|mp_beta)\.|segmentation\.|"
    r".*relative_position_index$)"
)


@dataclass
class DetectorWeights:
    """What `load_mmdet_dino` did: tensors loaded, and our parts the checkpoint lacks.

    ``not_in_checkpoint`` has one line per group of tensors left at their
    initialisation (the backbone of a head-only checkpoint, output norms of
    Swin stages a DINO-4scale backbone does not output).
    """

    loaded: int
    not_in_checkpoint: list[str]


def load_mmdet_dino(model: torch.nn.Module, state: StateDict) -> DetectorWeights:
    """Load a whole mmdet DINO state dict into an `IVTuningModel`.

    Raises `WeightsError` for a neck with another number of levels than the
    config's, for detection-head keys the checkpoint lacks, keys with no place and
    shape mismatches (e.g. a COCO checkpoint's 80 classes against a config with 6).
    Backbone parts the checkpoint lacks are left as they are and reported.
    """
    if model.detection is None:
        raise WeightsError("an mmdet DINO checkpoint needs a config with a detection head")
    _check_neck_levels(model.detection, state)
    converted = mmdet_dino_to_ours(state)
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(converted) if not _NOT_IN_DETECTOR.match(k))
    kept, missing = _absent_backbone_parts(missing, state, model.detection.backbone_stages)
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
                   for k in set(converted) & set(expected)
                   if converted[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError("; ".join([
            list_keys("mmdet DINO checkpoint does not fit the config: missing", missing),
            list_keys("unexpected", unexpected),
            list_keys("wrong shape (checkpoint vs config; check detection.classes and sizes)",
                      wrong),
        ]))
    model.load_state_dict(converted, strict=False)
    return DetectorWeights(len(converted), kept)


def _neck_levels(keys: list[str], prefix: str) -> tuple[int, int]:
    """(input maps, extra levels) of a ChannelMapper from its state-dict keys."""
    counts = []
    for part in ("convs", "extra_convs"):
        pattern = re.compile(rf"{re.escape(prefix)}{part}\.(\d+)\.")
        counts.append(len({m[1] for k in keys if (m := pattern.match(k))}))
    return counts[0], counts[1]


def _check_neck_levels(detection: torch.nn.Module, state: StateDict) -> None:
    """A clear error when the checkpoint's neck has other levels than the config's."""
    theirs = _neck_levels(list(state), "neck.")
    ours = _neck_levels(list(detection.state_dict()), "neck.")
    if theirs == (0, 0) or theirs == ours:
        return  # no neck at all is reported as missing keys
    raise WeightsError(
        f"the checkpoint's DINO is {sum(theirs)}-scale (its neck maps {theirs[0]} backbone "
        f"stages and adds {theirs[1]} extra levels), the config's is {sum(ours)}-scale "
        f"(detection.backbone_stages {detection.backbone_stages}, extra_levels {ours[1]}); "
        "set them to match: mmdet's dino-4scale Swin configs read stages [1, 2, 3], "
        "dino-5scale ones [0, 1, 2, 3], both with 1 extra level")


def _absent_backbone_parts(missing: list[str], state: StateDict,
                           read_stages: list[int]) -> tuple[list[str], list[str]]:
    """Split missing keys into backbone parts to keep (one report line per group) and errors.

    A checkpoint without ``backbone.*`` keys keeps our whole backbone. One with a
    backbone keeps the output norms of stages its Swin does not output, unless
    detection reads that stage; any other missing key stays an error.
    """
    backbone = [k for k in missing if k.startswith("backbone.")]
    errors = [k for k in missing if not k.startswith("backbone.")]
    if not backbone:
        return [], errors
    if not any(k.startswith("backbone.") for k in state):
        return [f"backbone.* ({len(backbone)} tensors: the Swin and its output norms): the "
                "checkpoint has no backbone, so they keep their initialisation (random Swin)"
                ], errors
    skipped = sorted({int(m[1]) for k in backbone
                      if (m := re.match(r"backbone\.out_norms\.(\d+)\.", k))} - set(read_stages))
    prefixes = tuple(f"backbone.out_norms.{stage}." for stage in skipped)
    errors += [k for k in backbone if not k.startswith(prefixes)]
    return [f"backbone.out_norms.{stage}.*: the checkpoint's Swin does not output stage {stage} "
            "(mmdet out_indices; DINO-4scale skips stage 0) and detection does not read it, so "
            "this output norm keeps its initialisation" for stage in skipped], errors
