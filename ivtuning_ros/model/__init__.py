"""Pure-PyTorch IV-tuning model: no ROS imports here.

Layout: ``backbones/`` (frozen foundation models: Swin, plain ViTs, their checkpoint
layouts), ``adapters/`` (what trains on top: IV-tuning), ``heads/`` (DINO, SegFormer and
the layers they use); the model, its config, checkpoints and summaries here.
"""
from .adapters.base import AdaptedBackbone, BackboneOutput
from .backbones.swin_weights import load_swin_checkpoint
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .config import (
    BackboneConfig,
    ConfigError,
    DetectionConfig,
    ModelConfig,
    PrompterConfig,
    SegmentationConfig,
    load_config,
)
from .model import IVTuningModel, build_backbone, build_model
from .summary import model_summary, parameter_summary
from .weights import WeightsError

__all__ = [
    "AdaptedBackbone",
    "BackboneConfig",
    "BackboneOutput",
    "ConfigError",
    "DetectionConfig",
    "IVTuningModel",
    "ModelConfig",
    "PrompterConfig",
    "SegmentationConfig",
    "WeightsError",
    "build_backbone",
    "build_model",
    "load_checkpoint",
    "load_config",
    "load_model",
    "load_swin_checkpoint",
    "model_summary",
    "parameter_summary",
    "save_checkpoint",
]
