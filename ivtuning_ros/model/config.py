"""Typed model configuration: YAML file -> dataclasses, with `key=value` overrides.

A config file is the only place sizes live. `load_config` reads it, applies
overrides such as ``prompter.split_ratio=0.5`` and checks every key, so a typo
fails loudly instead of being ignored.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A model configuration that cannot be used; the message says what to fix."""


# Swin sizes (embed dim, depths, heads) of the four published variants.
SWIN_VARIANTS: dict[str, dict[str, Any]] = {
    "swin_t": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]},
    "swin_s": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24]},
    "swin_b": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]},
    "swin_l": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48]},
}


@dataclass
class BackboneConfig:
    """The frozen Swin Transformer.

    ``variant`` fills embed_dim/depths/num_heads unless they are given explicitly
    (a tiny test backbone gives them). ``weights`` is a torchvision-layout Swin
    checkpoint (see ``ivtuning convert``); None leaves random weights.
    """

    variant: str = "swin_t"
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.variant not in SWIN_VARIANTS:
            raise ConfigError(
                f"backbone.variant '{self.variant}' is unknown; use one of "
                f"{', '.join(SWIN_VARIANTS)}"
            )
        sizes = SWIN_VARIANTS[self.variant]
        self.embed_dim = self.embed_dim or sizes["embed_dim"]
        self.depths = list(self.depths or sizes["depths"])
        self.num_heads = list(self.num_heads or sizes["num_heads"])
        if len(self.depths) != len(self.num_heads):
            raise ConfigError("backbone.depths and backbone.num_heads must have the same length")
        if self.window_size < 1:
            raise ConfigError("backbone.window_size must be a positive integer")

    @property
    def stage_dims(self) -> list[int]:
        """Channel width of each stage's output."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]


@dataclass
class PrompterConfig:
    """The trainable Modality-aware Prompter (paper section III-B).

    ``beta_blocks`` is how many Swin blocks, counted from the first, carry an
    MP-beta; None means all of them, 0 means MP-alpha alone.
    """

    alpha_hidden: int = 8
    beta_hidden: int = 64
    split_ratio: float = 0.25
    beta_blocks: int | None = None
    ir_in_channels: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.split_ratio <= 1.0:
            raise ConfigError(
                f"prompter.split_ratio must lie in [0, 1], got {self.split_ratio}"
            )
        if self.alpha_hidden < 1 or self.beta_hidden < 1:
            raise ConfigError("prompter.alpha_hidden and prompter.beta_hidden must be >= 1")
        if self.beta_blocks is not None and self.beta_blocks < 0:
            raise ConfigError("prompter.beta_blocks must be >= 0 (or null for every block)")
        if self.ir_in_channels < 1:
            raise ConfigError("prompter.ir_in_channels must be >= 1")


@dataclass
class DetectionConfig:
    """The DINO detection head (DESIGN.md "The model"; REFERENCE_FACTS.md section 2).

    The neck reads ``backbone_stages`` and adds ``extra_levels`` maps by 3x3
    stride-2 convs, so the number of feature levels is their sum.
    """

    classes: list[str] = field(default_factory=list)
    hidden_dim: int = 256
    backbone_stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    extra_levels: int = 1
    num_queries: int = 900
    num_heads: int = 8
    num_points: int = 4
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    num_select: int = 300

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("detection.classes must list at least one class name")
        if sorted(set(self.backbone_stages)) != list(self.backbone_stages) or not all(
            0 <= s <= 3 for s in self.backbone_stages
        ):
            raise ConfigError("detection.backbone_stages must be increasing stage indices in 0..3")
        if self.hidden_dim % self.num_heads or self.hidden_dim % 32:
            raise ConfigError("detection.hidden_dim must be divisible by num_heads and by 32 "
                              "(GroupNorm groups)")
        if self.num_queries < 1 or self.num_select < 1 or self.decoder_layers < 1:
            raise ConfigError("detection.num_queries, num_select and decoder_layers must be >= 1")

    @property
    def num_levels(self) -> int:
        return len(self.backbone_stages) + self.extra_levels


@dataclass
class SegmentationConfig:
    """The SegFormer-style all-MLP segmentation head."""

    classes: list[str] = field(default_factory=list)
    embed_dim: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("segmentation.classes must list at least one class name")


@dataclass
class InputConfig:
    """The network's fixed input size and how raw frames become its input.

    Images are letterboxed into height x width. RGB is scaled to [0, 1] and
    normalised by rgb_mean/rgb_std. IR is mapped to [0, 1] first: mono8 by
    /255; 16-bit counts and float temperatures by automatic gain control
    (``ir_agc: percentile``: clip at the ir_percentiles of each frame) or a
    fixed range (``ir_agc: fixed``: ir_fixed_range); then normalised by
    ir_mean/ir_std.
    """

    height: int = 512
    width: int = 640
    rgb_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    rgb_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    ir_mean: float = 0.5
    ir_std: float = 0.25
    ir_agc: str = "percentile"
    ir_percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])
    ir_fixed_range: list[float] = field(default_factory=lambda: [0.0, 65535.0])

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ConfigError("input.height and input.width must be at least 32 pixels")
        if self.ir_agc not in ("percentile", "fixed"):
            raise ConfigError(f"input.ir_agc must be 'percentile' or 'fixed', got '{self.ir_agc}'")
        low, high = self.ir_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ConfigError("input.ir_percentiles must be [low, high], 0 <= low < high <= 100")
        if self.ir_fixed_range[0] >= self.ir_fixed_range[1]:
            raise ConfigError("input.ir_fixed_range must be [low, high] with low < high")
        if len(self.rgb_mean) != 3 or len(self.rgb_std) != 3 or min(self.rgb_std) <= 0:
            raise ConfigError("input.rgb_mean and input.rgb_std need 3 values, std > 0")


@dataclass
class ModelConfig:
    """A whole model description, as written in a YAML file under ``models/``.

    ``detection`` and ``segmentation`` are optional: a model has one head, the
    other, or both on one backbone pass.
    """

    name: str = "ivtuning"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompter: PrompterConfig = field(default_factory=PrompterConfig)
    detection: DetectionConfig | None = None
    segmentation: SegmentationConfig | None = None
    input: InputConfig = field(default_factory=InputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, as stored inside checkpoints."""
        return dataclasses.asdict(self)


def _build_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys are {', '.join(prefix + k for k in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        nested = _NESTED.get((cls, name))
        path = f"{where}.{name}" if where else name
        use_nested = nested is not None and value is not None
        kwargs[name] = _build_dataclass(nested, value, path) if use_nested else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad value in '{where or 'config'}': {exc}") from exc


_NESTED: dict[tuple[type, str], type] = {
    (ModelConfig, "backbone"): BackboneConfig,
    (ModelConfig, "prompter"): PrompterConfig,
    (ModelConfig, "detection"): DetectionConfig,
    (ModelConfig, "segmentation"): SegmentationConfig,
    (ModelConfig, "input"): InputConfig,
}


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Build and validate a `ModelConfig` from plain data (a parsed YAML file)."""
    return _build_dataclass(ModelConfig, data, "")


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to plain config data."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ModelConfig:
    """Read a model config YAML file, apply overrides, and validate it.

    Relative ``backbone.weights`` paths are resolved against the config's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
    config = config_from_dict(apply_overrides(data, overrides))
    weights = config.backbone.weights
    if weights and not Path(weights).is_absolute():
        config.backbone.weights = str(path.parent / weights)
    return config
