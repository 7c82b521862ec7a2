"""Swin checkpoint layouts: reading, converting to torchvision layout, loading.

Three layouts exist in the wild:

* torchvision (``features.{i}...``): what our backbone holds.
* Microsoft's original Swin (``layers.{s}.blocks.{b}...``, e.g.
  ``swin_large_patch4_window12_384_22k.pth``): same PatchMerging channel order.
* mmdet (``stages.{s}.blocks.{b}...``, optionally under ``backbone.``): FFN and
  attention renamed, PatchMerging channels in ``nn.Unfold`` order, and
  per-stage output norms ``norm{i}`` (these become our ``out_norms.{i}``).

Every converter returns a torchvision-layout state dict and fails with a
`WeightsError` that lists each key it cannot place.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from ..weights import StateDict, WeightsError, list_keys, read_checkpoint

# Keys that carry nothing our backbone needs: classifier parts, and buffers we rebuild.
_IGNORED = re.compile(
    r"^(head\.|norm\.|.*relative_position_index$|.*attn_mask$|.*relative_coords_table$)"
)


def detect_swin_layout(state: StateDict) -> str:
    """'torchvision', 'microsoft' or 'mmdet', from the key names."""
    keys = list(state)
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if any(k.startswith("layers.") for k in keys):
        return "microsoft"
    if any(k.startswith(("stages.", "backbone.stages.")) for k in keys):
        return "mmdet"
    raise WeightsError(
        "cannot tell the Swin checkpoint layout: expected keys starting with 'features.' "
        "(torchvision), 'layers.' (Microsoft Swin) or 'stages.'/'backbone.stages.' (mmdet)"
    )


def unfold_to_concat_order(tensor: Tensor) -> Tensor:
    """PatchMerging weights from nn.Unfold channel order to torchvision's [x0, x1, x2, x3].

    Unfold orders the 4*C inputs channel-major with patch positions
    (0,0), (0,1), (1,0), (1,1) = [x0, x2, x1, x3]; torchvision concatenates
    position-major x0, x1, x2, x3. Works on (out, 4C) weights and (4C,) vectors.
    """
    lead = tensor.shape[:-1]
    channels = tensor.shape[-1] // 4
    by_position = tensor.reshape(*lead, channels, 4).transpose(-1, -2)  # [x0, x2, x1, x3]
    return by_position[..., [0, 2, 1, 3], :].reshape(*lead, 4 * channels)


def concat_to_unfold_order(tensor: Tensor) -> Tensor:
    """Inverse of `unfold_to_concat_order` (torchvision/Microsoft order to mmdet's)."""
    lead = tensor.shape[:-1]
    channels = tensor.shape[-1] // 4
    by_position = tensor.reshape(*lead, 4, channels)[..., [0, 2, 1, 3], :]
    return by_position.transpose(-1, -2).reshape(*lead, 4 * channels)


def _rename(state: StateDict, rules: list[tuple[str, str | Callable[[re.Match], str]]],
            layout: str) -> StateDict:
    """Apply the first matching (pattern, replacement) to every key; collect unplaced keys."""
    out: StateDict = {}
    unplaced = []
    for key, value in state.items():
        for pattern, replacement in rules:
            match = re.fullmatch(pattern, key)
            if match:
                new_key = (replacement(match) if callable(replacement)
                           else match.expand(replacement))
                out[new_key] = value
                break
        else:
            if not _IGNORED.match(key):
                unplaced.append(key)
    if unplaced:
        raise WeightsError(list_keys(f"{layout} checkpoint has keys with no place in a "
                                      "torchvision Swin", unplaced))
    return out


def _block_key(match: re.Match) -> str:
    stage, block, rest = int(match[1]), match[2], match[3]
    return f"features.{2 * stage + 1}.{block}.{rest}"


def microsoft_swin_to_torchvision(state: StateDict) -> StateDict:
    """Microsoft's original Swin layout -> torchvision layout (no channel reordering)."""
    block_parts = r"(norm1\.\w+|norm2\.\w+|attn\.qkv\.\w+|attn\.proj\.\w+|" \
                  r"attn\.relative_position_bias_table)"
    rules = [
        (r"patch_embed\.proj\.(\w+)", r"features.0.0.\1"),
        (r"patch_embed\.norm\.(\w+)", r"features.0.2.\1"),
        (rf"layers\.(\d+)\.blocks\.(\d+)\.{block_parts}", _block_key),
        (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(\w+)",
         lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.mlp.0.{m[3]}"),
        (r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(\w+)",
         lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.mlp.3.{m[3]}"),
        (r"layers\.(\d+)\.downsample\.(reduction|norm)\.(\w+)",
         lambda m: f"features.{2 * int(m[1]) + 2}.{m[2]}.{m[3]}"),
    ]
    return _rename(state, rules, "Microsoft Swin")


def mmdet_swin_to_torchvision(state: StateDict) -> StateDict:
    """mmdet Swin layout (``stages.*``, optionally under ``backbone.``) -> torchvision layout.

    PatchMerging ``reduction.weight`` and ``norm.*`` are reordered from Unfold to
    concatenation order; ``norm{i}`` output norms become ``out_norms.{i}.*``.
    In a whole detector checkpoint only the ``backbone.`` keys are taken.
    """
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    rules = [
        (r"patch_embed\.projection\.(\w+)", r"features.0.0.\1"),
        (r"patch_embed\.norm\.(\w+)", r"features.0.2.\1"),
        (r"stages\.(\d+)\.blocks\.(\d+)\.(norm1\.\w+|norm2\.\w+)", _block_key),
        (r"stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(qkv\.\w+|proj\.\w+|"
         r"relative_position_bias_table)",
         lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.attn.{m[3]}"),
        (r"stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(\w+)",
         lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.mlp.0.{m[3]}"),
        (r"stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(\w+)",
         lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.mlp.3.{m[3]}"),
        (r"stages\.(\d+)\.downsample\.(reduction|norm)\.(\w+)",
         lambda m: f"features.{2 * int(m[1]) + 2}.{m[2]}.{m[3]}"),
        (r"norm(\d)\.(\w+)", r"out_norms.\1.\2"),
    ]
    out = _rename(state, rules, "mmdet Swin")
    for key in list(out):
        if re.fullmatch(r"features\.\d+\.(reduction\.weight|norm\.weight|norm\.bias)", key):
            out[key] = unfold_to_concat_order(out[key])
    return out


def to_torchvision_layout(state: StateDict) -> StateDict:
    """Convert a Swin state dict of any supported layout to torchvision layout."""
    converters = {
        "torchvision": dict,
        "microsoft": microsoft_swin_to_torchvision,
        "mmdet": mmdet_swin_to_torchvision,
    }
    return converters[detect_swin_layout(state)](state)


def load_swin_state(backbone: nn.Module, state: StateDict) -> None:
    """Load a torchvision-layout Swin state dict into ``backbone.swin`` (and ``out_norms``).

    Raises `WeightsError` naming every missing or unexpected key.
    """
    expected = {k for k in backbone.swin.state_dict() if not _IGNORED.match(k)}
    swin_state = {k: v for k, v in state.items()
                  if k.startswith("features.") and not _IGNORED.match(k)}
    norm_state = {k: v for k, v in state.items() if k.startswith("out_norms.")}
    unexpected = sorted(k for k in state if k not in swin_state and k not in norm_state
                        and not _IGNORED.match(k))
    unexpected += sorted(set(swin_state) - expected)
    unexpected += sorted(set(norm_state) - set(backbone.out_norms.state_dict(prefix="out_norms.")))
    missing = sorted(expected - set(swin_state))
    if missing or unexpected:
        raise WeightsError(
            list_keys("Swin weights do not fit this backbone config (check backbone.variant "
                       "and window_size); missing", missing)
            + "; " + list_keys("unexpected", unexpected)
        )
    reference = backbone.state_dict()
    for key, value in {**swin_state, **norm_state}.items():
        target = reference[key if key.startswith("out_norms.") else f"swin.{key}"]
        if target.shape != value.shape:
            raise WeightsError(f"Swin weight '{key}' has shape {tuple(value.shape)}, the backbone "
                               f"expects {tuple(target.shape)}: wrong variant or window_size?")
    backbone.swin.load_state_dict(swin_state, strict=False)
    backbone.out_norms.load_state_dict(
        {k[len("out_norms."):]: v for k, v in norm_state.items()}, strict=False
    )


def load_swin_checkpoint(backbone: nn.Module, path: str | Path) -> None:
    """Read a Swin checkpoint of any supported layout and load it into the backbone."""
    load_swin_state(backbone, to_torchvision_layout(read_checkpoint(path)))
