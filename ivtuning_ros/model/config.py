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

from ..hub.catalog import is_catalogue_name


class ConfigError(ValueError):
    """A model configuration that cannot be used; the message says what to fix."""


# Swin sizes (embed dim, depths, heads) of the four published variants.
SWIN_VARIANTS: dict[str, dict[str, Any]] = {
    "swin_t": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]},
    "swin_s": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24]},
    "swin_b": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]},
    "swin_l": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48]},
}

# Plain ViTs (timm architecture, width, layers, heads): the paper's Tables I and VII, and
# a small DINOv3 for real time. SAM's image encoder keeps its 1024-pixel pre-training
# grid for its relative position tables (resampled to the input at run time).
VIT_VARIANTS: dict[str, dict[str, Any]] = {
    "eva02_l": {"timm_name": "eva02_large_patch14_224", "embed_dim": 1024, "depth": 24,
                "num_heads": 16},
    "clip_l": {"timm_name": "vit_large_patch14_clip_224", "embed_dim": 1024, "depth": 24,
               "num_heads": 16},
    "mae_l": {"timm_name": "vit_large_patch16_224", "embed_dim": 1024, "depth": 24,
              "num_heads": 16},
    "sam_h": {"timm_name": "samvit_huge_patch16", "embed_dim": 1280, "depth": 32,
              "num_heads": 16, "pretrain_size": 1024},
    "dinov3_l": {"timm_name": "vit_large_patch16_dinov3", "embed_dim": 1024, "depth": 24,
                 "num_heads": 16},
    "dinov3_s": {"timm_name": "vit_small_patch16_dinov3", "embed_dim": 384, "depth": 12,
                 "num_heads": 6},
}


@dataclass
class BackboneConfig:
    """The frozen foundation model: a Swin (torchvision) or a plain ViT (timm).

    ``variant`` fills embed_dim/depths/num_heads unless they are given explicitly
    (a tiny test backbone gives them; a ViT is one stage: ``depths: [layers]``).
    ``patch_size`` defaults to 4 (Swin) and 16 (ViT: EVA02's detection and segmentation
    practice; a patch-14 checkpoint is resampled on loading). ``window_size`` and
    ``mlp_ratio`` are the Swin's. ``feature_layers`` (ViT only) are the four layers the
    feature pyramid reads, one per scale; None reads the last layer alone (ViTDet).
    ``weights`` is a checkpoint (Swin: see ``ivtuning convert``; ViT: timm layout, or the
    model's original layout that timm converts), or a weights catalogue name
    (``torchvision:swin_t``, `ivtuning weights list`) resolved from the cache when the
    weights load; None leaves random weights.
    """

    variant: str = "swin_t"
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_size: int = 7
    patch_size: int | None = None
    mlp_ratio: float = 4.0
    feature_layers: list[int] | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.variant in SWIN_VARIANTS:
            sizes = SWIN_VARIANTS[self.variant]
        elif self.variant in VIT_VARIANTS:
            sizes = dict(VIT_VARIANTS[self.variant])
            sizes.update(depths=[sizes["depth"]], num_heads=[sizes["num_heads"]])
        else:
            raise ConfigError(
                f"backbone.variant '{self.variant}' is unknown; use one of "
                f"{', '.join([*SWIN_VARIANTS, *VIT_VARIANTS])}"
            )
        self.embed_dim = self.embed_dim or sizes["embed_dim"]
        self.depths = list(self.depths or sizes["depths"])
        self.num_heads = list(self.num_heads or sizes["num_heads"])
        self.patch_size = self.patch_size or (4 if self.family == "swin" else 16)
        if len(self.depths) != len(self.num_heads):
            raise ConfigError("backbone.depths and backbone.num_heads must have the same length")
        if self.window_size < 1:
            raise ConfigError("backbone.window_size must be a positive integer")
        if self.family == "vit":
            self._check_vit()
        elif self.feature_layers is not None:
            raise ConfigError("backbone.feature_layers is for plain ViTs; a Swin gives its "
                              "four stages")

    def _check_vit(self) -> None:
        if len(self.depths) != 1:
            raise ConfigError(f"backbone '{self.variant}' is a plain ViT: give depths as "
                              f"[layers], got {self.depths}")
        layers = self.feature_layers
        if layers is not None and (len(layers) != 4 or sorted(set(layers)) != list(layers)
                                   or not 0 <= layers[0] <= layers[-1] < self.depths[0]):
            raise ConfigError(f"backbone.feature_layers must be four increasing layer indices "
                              f"in 0..{self.depths[0] - 1} (or null for the last layer), "
                              f"got {layers}")

    @property
    def family(self) -> str:
        """'swin' or 'vit'."""
        return "swin" if self.variant in SWIN_VARIANTS else "vit"

    @property
    def timm_name(self) -> str:
        """The timm architecture of a ViT variant."""
        return VIT_VARIANTS[self.variant]["timm_name"]

    @property
    def pretrain_size(self) -> int | None:
        """The image size a ViT's position tables were made for, where timm needs it."""
        return VIT_VARIANTS[self.variant].get("pretrain_size")

    @property
    def stage_dims(self) -> list[int]:
        """Channel width of each of the four maps the heads read."""
        if self.family == "vit":
            return [self.embed_dim // 4, self.embed_dim // 2, self.embed_dim, self.embed_dim]
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


METHODS = ("ivtuning", "cpal", "dra", "none")
STAGES = [0, 1, 2, 3]


def _check_stages(value: list[int], key: str) -> None:
    if sorted(set(value)) != list(value) or not all(s in STAGES for s in value):
        raise ConfigError(f"{key} must be increasing stage indices in 0..3, got {value}")


@dataclass
class CPALConfig:
    """CPAL (SEED_METHODS.md section 1): cross prompts (MCP) after the attention and MLP
    residuals of both streams, gated perception (GPM) on the stage outputs, LoRA on the
    last stage's q and k. The switches reproduce the paper's ablations (Tables VIII, IX)."""

    mcp_hidden: int = 8
    mcp_groups: int = 4
    mcp_dropout: float = 0.1
    mcp_stages: list[int] = field(default_factory=lambda: list(STAGES))
    mcp_order: str = "parallel"
    mcp_direction: str = "both"
    mcp_share_directions: bool = True
    gpm_stages: list[int] = field(default_factory=lambda: list(STAGES))
    gpm_reduction: int = 4
    gpm_residual: bool = False
    lora_stages: list[int] = field(default_factory=lambda: [3])
    lora_rank: int = 8
    lora_alpha: float = 1.0
    lora_targets: list[str] = field(default_factory=lambda: ["q", "k"])
    lora_per_modality: bool = True

    def __post_init__(self) -> None:
        for key in ("mcp_stages", "gpm_stages", "lora_stages"):
            _check_stages(getattr(self, key), f"cpal.{key}")
        if self.mcp_order not in ("parallel", "sequential"):
            raise ConfigError(f"cpal.mcp_order must be 'parallel' (eqs. 7-12) or 'sequential' "
                              f"(the public code), got '{self.mcp_order}'")
        if self.mcp_direction not in ("both", "rgb_to_ir", "ir_to_rgb"):
            raise ConfigError("cpal.mcp_direction must be 'both', 'rgb_to_ir' or 'ir_to_rgb'")
        if not self.lora_targets or not set(self.lora_targets) <= {"q", "k", "v"}:
            raise ConfigError("cpal.lora_targets must be a non-empty subset of [q, k, v]")
        if self.mcp_hidden % self.mcp_groups:
            raise ConfigError("cpal.mcp_hidden must be divisible by cpal.mcp_groups")


@dataclass
class PSSTConfig:
    """DRA's stage 1 (progressive self-supervised tuning of the modality LoRA)."""

    mask_ratio: float = 0.6
    mask_unit: int = 32
    warmup_fraction: float = 0.2
    high_fraction: float = 0.5
    lambda_mae: float = 1.0
    alpha_weight: float = 1.0
    head_hidden: int = 2048
    head_bottleneck: int = 256
    prototypes: int = 4096
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9
    ema: list[float] = field(default_factory=lambda: [0.996, 1.0])

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError("dra.psst.mask_ratio must lie in (0, 1)")
        if self.mask_unit % 32:
            raise ConfigError("dra.psst.mask_unit must be a multiple of 32 pixels (the Swin's "
                              "last-stage stride)")


@dataclass
class DRAConfig:
    """DRA (SEED_METHODS.md section 2): a modality LoRA on every qkv of the IR stream, learnt
    once without labels (``ivtuning train --stage modality``) and frozen after; per task,
    prompt keys/values in every window of both streams and a task-prompted mixture of
    modality experts (MoME) on the stage outputs. ``modality_lora``: the stage-1 file a
    task model builds on (relative to the config file); None leaves a zero LoRA."""

    lora_rank: int = 32
    lora_alpha: float = 32.0
    modality_lora: str | None = None
    prompt_length: int = 10
    mome_stages: list[int] = field(default_factory=lambda: list(STAGES))
    mome_ratio: int = 4
    modality_dropout: float = 0.1
    psst: PSSTConfig = field(default_factory=PSSTConfig)

    def __post_init__(self) -> None:
        _check_stages(self.mome_stages, "dra.mome_stages")
        if self.prompt_length < 0 or self.lora_rank < 1 or self.mome_ratio < 1:
            raise ConfigError("dra.prompt_length must be >= 0, dra.lora_rank and "
                              "dra.mome_ratio >= 1")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError("dra.modality_dropout must lie in [0, 1)")


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
class SODConfig:
    """The CPNet-style salient object detection head (`model/heads/cpnet.py`).

    ``channels`` are the decoder's widths at the four stages, stage 0 (1/4) first;
    CPNet's own are [128, 256, 512, 1024] (its Swin-B's widths).
    """

    channels: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])

    def __post_init__(self) -> None:
        if len(self.channels) != 4 or min(self.channels) < 8:
            raise ConfigError(f"sod.channels must be four widths >= 8 (stage 0 first), got "
                              f"{self.channels}")


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

    ``detection``, ``segmentation`` and ``sod`` (salient object detection) are optional:
    a model has any non-empty subset of them on one backbone pass. ``method`` is the
    adapter on the frozen backbone: ``ivtuning`` (sizes in ``prompter``), ``cpal`` or
    ``dra`` (sizes in their own section; both are specified for the Swin), or ``none`` (the
    frozen Swin alone on RGB: the common start of `ivtuning compare`).
    ``prompter.ir_in_channels`` is the IR the backbone receives for every method.
    """

    name: str = "ivtuning"
    method: str = "ivtuning"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompter: PrompterConfig = field(default_factory=PrompterConfig)
    cpal: CPALConfig | None = None
    dra: DRAConfig | None = None
    detection: DetectionConfig | None = None
    segmentation: SegmentationConfig | None = None
    sod: SODConfig | None = None
    input: InputConfig = field(default_factory=InputConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method '{self.method}' is unknown; use one of "
                              f"{', '.join(METHODS)}")
        for other in ("cpal", "dra"):
            if getattr(self, other) is not None and self.method != other:
                raise ConfigError(f"a '{other}' section needs method: {other} (this config's "
                                  f"method is '{self.method}')")
        if self.method == "cpal" and self.cpal is None:
            self.cpal = CPALConfig()
        if self.method == "dra" and self.dra is None:
            self.dra = DRAConfig()
        if self.method != "ivtuning" and self.backbone.family != "swin":
            raise ConfigError(f"method '{self.method}' is specified for the Swin backbones; "
                              f"'{self.backbone.variant}' runs IV-tuning only")

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
    (ModelConfig, "cpal"): CPALConfig,
    (ModelConfig, "dra"): DRAConfig,
    (DRAConfig, "psst"): PSSTConfig,
    (ModelConfig, "detection"): DetectionConfig,
    (ModelConfig, "segmentation"): SegmentationConfig,
    (ModelConfig, "sod"): SODConfig,
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
    if weights and not Path(weights).is_absolute() and not is_catalogue_name(weights):
        config.backbone.weights = str(path.parent / weights)
    modality = config.dra.modality_lora if config.dra else None
    if modality and not Path(modality).is_absolute():
        config.dra.modality_lora = str(path.parent / modality)
    return config
