"""Pure-PyTorch IV-tuning model: no ROS imports here."""
from .backbone import BackboneOutput, IVTuningBackbone, build_backbone
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
from .model import IVTuningModel, build_model
from .summary import model_summary, parameter_summary
from .weights import WeightsError, load_swin_checkpoint

__all__ = [
    "BackboneConfig",
    "BackboneOutput",
    "ConfigError",
    "DetectionConfig",
    "IVTuningBackbone",
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
