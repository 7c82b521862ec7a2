"""The complete IV-tuning model: one backbone pass feeding detection, segmentation, or both."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..hub.cache import resolve
from .adapters.base import AdaptedBackbone
from .adapters.cpal.backbone import CPALSwin
from .adapters.dra.backbone import DRASwin
from .adapters.dra.modality_file import load_modality_file
from .adapters.frozen_only import FrozenSwin
from .adapters.ivtuning.swin import IVTuningSwin
from .adapters.ivtuning.vit import IVTuningViT
from .backbones.swin_weights import load_swin_checkpoint
from .backbones.vit_weights import load_vit_checkpoint
from .config import BackboneConfig, ModelConfig, PrompterConfig
from .heads.cpnet import CPNetHead
from .heads.dino import DINOHead, build_dino
from .heads.segformer import SegFormerHead


class IVTuningModel(nn.Module):
    """Frozen backbone + adapter (`AdaptedBackbone`) + optional DINO, SegFormer and CPNet
    (salient object detection) heads.

    forward(rgb, ir) returns a dict:
      ``ir_used`` (bool): False when run RGB-only;
      ``pred_logits`` (B, Q, K) and ``pred_boxes`` (B, Q, 4) cxcywh normalised to
      each image's region of the network input, when the model detects (plus
      training-only extras);
      ``seg_logits`` (B, K_seg, H, W) at the input size, when it segments;
      ``sod_logits`` (B, 1, H, W) saliency logits at the input size, when it has the SOD
      head (training mode adds ``sod_deep_logits``, the head's four maps, for the loss).

    ``valid_sizes`` (B, 2) float is each image's (height, width) in input pixels,
    at the top left of a right/bottom-padded input (as letterboxed by
    ``runtime.preprocess.network_letterbox``); None: the whole input is image.
    The detection head masks the padding; the segmentation head needs nothing
    (its output is cropped to the image afterwards).

    ``denoising`` (training only) is passed to the detection head: see
    ``DINOHead.forward`` for what it adds (``dn_outputs``).
    """

    def __init__(self, backbone: AdaptedBackbone, detection: DINOHead | None,
                 segmentation: SegFormerHead | None, sod: CPNetHead | None = None) -> None:
        super().__init__()
        if detection is None and segmentation is None and sod is None:
            raise ValueError("a model needs at least one head: detection, segmentation or sod")
        self.backbone = backbone
        self.detection = detection
        self.segmentation = segmentation
        self.sod = sod

    def forward(self, rgb: Tensor, ir: Tensor | None = None, denoising: Any = None,
                valid_sizes: Tensor | None = None) -> dict:
        features = self.backbone(rgb, ir)
        outputs = self.heads(features.features, tuple(rgb.shape[-2:]), denoising, valid_sizes)
        outputs["ir_used"] = features.ir_used
        return outputs

    def heads(self, features: list[Tensor], input_size: tuple[int, int],
              denoising: Any = None, valid_sizes: Tensor | None = None) -> dict:
        """The model's heads on the four stage maps; seg and sod logits at ``input_size``."""
        outputs: dict = {}
        if self.detection is not None:
            outputs.update(self.detection(features, denoising, valid_sizes, input_size))
        if self.segmentation is not None:
            outputs["seg_logits"] = self.segmentation(features, input_size)
        if self.sod is not None:
            deep = self.sod(features, input_size)
            outputs["sod_logits"] = self.sod.fuse(deep)
            if self.training:
                outputs["sod_deep_logits"] = deep
        return outputs


def build_backbone(config: ModelConfig | BackboneConfig, prompter: PrompterConfig | None = None,
                   *, load_weights: bool = True) -> AdaptedBackbone:
    """Build the adapted backbone a config names (its method on its foundation model) and
    load ``backbone.weights`` (and DRA's modality file) if given.

    Accepts a whole `ModelConfig`, or a `BackboneConfig` with a `PrompterConfig` (IV-tuning).
    """
    if not isinstance(config, ModelConfig):
        config = ModelConfig(backbone=config, prompter=prompter or PrompterConfig())
    weights = resolve(config.backbone.weights) if load_weights and config.backbone.weights \
        else None
    if config.method == "cpal":
        backbone = CPALSwin(config)
    elif config.method == "dra":
        backbone = DRASwin(config)
    elif config.method == "none":
        backbone = FrozenSwin(config)
    elif config.backbone.family == "swin":
        backbone = IVTuningSwin(config.backbone, config.prompter)
    else:
        backbone = IVTuningViT(config.backbone, config.prompter)
        if weights:
            load_vit_checkpoint(backbone.vit, weights)
        return backbone
    if weights:
        load_swin_checkpoint(backbone, weights)
    if load_weights and config.method == "dra" and config.dra.modality_lora:
        load_modality_file(backbone, config, config.dra.modality_lora)
    return backbone


def build_model(config: ModelConfig, *, load_weights: bool = True) -> IVTuningModel:
    """Build the model a config describes; ``load_weights`` loads ``backbone.weights``."""
    backbone = build_backbone(config, load_weights=load_weights)
    stage_dims = config.backbone.stage_dims
    detection = build_dino(config.detection, stage_dims) if config.detection else None
    segmentation = None
    if config.segmentation:
        segmentation = SegFormerHead(stage_dims, embed_dim=config.segmentation.embed_dim,
                                     num_classes=len(config.segmentation.classes),
                                     dropout=config.segmentation.dropout)
    sod = CPNetHead(stage_dims, config.sod.channels) if config.sod else None
    return IVTuningModel(backbone, detection, segmentation, sod)
