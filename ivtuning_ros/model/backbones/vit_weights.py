"""ViT checkpoints: timm layout, or a model's original layout through timm's own
conversion (EVA02's ``module``-wrapped MIM checkpoints, SAM's ``image_encoder.*``,
DINOv3's, OpenCLIP's), with the patch embedding and absolute position embedding
resampled where the checkpoint's patch size or grid differs from the config's."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from torch import nn

from ..weights import StateDict, WeightsError, list_keys, read_checkpoint

# Rebuilt at run time (rotary tables) or unused here (classifier and pre-training heads).
_IGNORED = re.compile(r"^(rope\.|head\.|fc_norm\.|lm_head\.|mask_token$)|\.rope\.")


def load_vit_state(vit: nn.Module, state: StateDict) -> None:
    """Convert ``state`` with the timm module's ``checkpoint_filter_fn`` and load it.

    Raises `WeightsError` naming every missing, unexpected or mis-shaped key.
    """
    convert = importlib.import_module(type(vit).__module__).checkpoint_filter_fn
    try:
        state = convert(state, vit)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise WeightsError(f"timm cannot convert this checkpoint for "
                           f"{type(vit).__name__}: {exc}") from exc
    expected = {k: v for k, v in vit.state_dict().items() if not _IGNORED.search(k)}
    state = {k: v for k, v in state.items() if not _IGNORED.search(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError("; ".join([
            list_keys("ViT weights do not fit this backbone config (check backbone.variant); "
                      "missing", missing),
            list_keys("unexpected", unexpected),
            list_keys("wrong shape", wrong),
        ]))
    vit.load_state_dict(state, strict=False)


def load_vit_checkpoint(vit: nn.Module, path: str | Path) -> None:
    """Read a ViT checkpoint file (timm or original layout) and load it."""
    load_vit_state(vit, read_checkpoint(path))
