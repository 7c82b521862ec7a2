"""Shared fixtures: the tiny test config and helpers to give prompters non-trivial weights."""
from pathlib import Path

import pytest
import torch

from ivtuning_ros.model import build_backbone, build_model, load_config

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
# The real RGB-IR pairs beside the project (never copied into it); tests skip without them.
ROADSCENE = REPO.parent / "shared" / "data" / "roadscene"
needs_roadscene = pytest.mark.skipif(
    not (ROADSCENE / "cropinfrared").is_dir(),
    reason=f"RoadScene pairs not found at {ROADSCENE} (cropinfrared/ + crop_LR_visible/)")


@pytest.fixture
def tiny_config():
    return load_config(MODELS / "ivt_tiny_test.yaml")


@pytest.fixture
def tiny_backbone(tiny_config):
    torch.manual_seed(0)
    return build_backbone(tiny_config).eval()


@pytest.fixture
def tiny_model(tiny_config):
    """The tiny full model (both heads), with a randomised (non-zero) prompter."""
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    randomize_trainable(model.backbone)
    return model


def randomize_trainable(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every trainable tensor random values (the zero-initialised s3/s4 included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        for buffer_name, buffer in module.named_buffers():
            if buffer_name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5, generator=generator)
            elif buffer_name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1, generator=generator)
