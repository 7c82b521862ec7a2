"""mmdet DINO detector checkpoints -> this project's model keys.

The key map comes from REFERENCE_FACTS.md section 4.2 (mmdet 3.x DINO with a
Swin backbone). The Swin part goes through `mmdet_swin_to_torchvision`; every
other key is renamed by the table below. A key with no place is an error.
"""
from __future__ import annotations

import re

import torch

from .weights import StateDict, WeightsError, list_keys, mmdet_swin_to_torchvision

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


def load_mmdet_dino(model: torch.nn.Module, state: StateDict) -> int:
    """Load a whole mmdet DINO state dict into an `IVTuningModel`; return tensors loaded.

    Raises `WeightsError` naming keys the checkpoint lacks (other than IV-tuning's
    own parts and the segmentation head), keys with no place, and shape mismatches
    (e.g. a COCO checkpoint's 80 classes against a config with 6).
    """
    converted = mmdet_dino_to_ours(state)
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(converted) if not _NOT_IN_DETECTOR.match(k))
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
    return len(converted)
