"""Pure-PyTorch IV-tuning model: no ROS imports here."""
from .backbone import BackboneOutput, IVTuningBackbone, build_backbone
from .config import (
    BackboneConfig,
    ConfigError,
    ModelConfig,
    PrompterConfig,
    load_config,
)
from .summary import parameter_summary
from .weights import WeightsError, load_swin_checkpoint

__all__ = [
    "BackboneConfig",
    "BackboneOutput",
    "ConfigError",
    "IVTuningBackbone",
    "ModelConfig",
    "PrompterConfig",
    "WeightsError",
    "build_backbone",
    "load_config",
    "load_swin_checkpoint",
    "parameter_summary",
]
