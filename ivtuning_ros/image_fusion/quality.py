"""Quality scorers that fill M2PN's memory bank (eq. 3): a score in (0, 1) per fused image,
high for clear contrast, sharp detail, proper brightness and no noise.

`HandcraftedScorer` scores those four attributes directly and needs no weights (the
offline default, SEED_METHODS.md section 3.5); `ClipScorer` is the paper's CLIP
evaluator for a user with ``open_clip`` and a local checkpoint. Both take
``score(fused, ir, visible)`` on (B, 1, H, W) images in [0, 1]."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

# The paper's App. A.2 prompts, word for word. Its negative list also repeats two of the
# positive sentences (which would cancel in the score); those two are left out.
POSITIVE = (
    "A high-quality image with clear contrast, sharp details, proper brightness, clean "
    "composition without noise or artifacts.",
    "An excellent image showing sharp details, accurate tones, optimal lighting, and no noise "
    "or artifacts.",
    "A clear, well-defined image with precise textures, natural brightness, and flawless "
    "composition without imperfections.")
NEGATIVE = (
    "Low-quality image with poor contrast, blurry details, improper brightness, significant "
    "noise and visible artifacts.",
    "An unclear image with blurred edges, poor exposure, and visible grain or compression "
    "artifacts.",
    "Distorted image with dull contrast, missing details, uneven brightness, and distracting "
    "noise patterns.")


class QualityScorer(Protocol):
    def score(self, fused: Tensor, ir: Tensor, visible: Tensor) -> Tensor: ...


def _spatial_frequency(x: Tensor) -> Tensor:
    rows = (x[..., :, 1:] - x[..., :, :-1]).square().mean((1, 2, 3))
    cols = (x[..., 1:, :] - x[..., :-1, :]).square().mean((1, 2, 3))
    return (rows + cols).sqrt()


def noise_sigma(x: Tensor) -> Tensor:
    """Immerkaer's fast noise estimate (1996) per image: the absolute response to the
    difference of two Laplacians, scaled."""
    kernel = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=x.dtype,
                          device=x.device).view(1, 1, 3, 3)
    height, width = x.shape[-2:]
    total = F.conv2d(x, kernel).abs().sum((1, 2, 3))
    return total * math.sqrt(math.pi / 2) / (6 * (width - 2) * (height - 2))


class HandcraftedScorer:
    """Q = sigmoid(dSF + dSD - 16 (mean_F - 0.5)^2 - (noise_F - noise_src) / noise_src),
    dX = (X(F) - max(X(IR), X(VIS))) / max(...): 0.5 for a fused image that merely equals
    its better source, higher when sharper, more contrasted, better exposed or cleaner."""

    def score(self, fused: Tensor, ir: Tensor, visible: Tensor) -> Tensor:
        def gain(measure) -> Tensor:
            best = torch.maximum(measure(ir), measure(visible))
            return (measure(fused) - best) / (best + 1e-6)

        def deviation(x: Tensor) -> Tensor:
            return x.std((1, 2, 3))

        sources_noise = (noise_sigma(ir) + noise_sigma(visible)) / 2
        exposure = 16 * (fused.mean((1, 2, 3)) - 0.5) ** 2
        noise = (noise_sigma(fused) - sources_noise) / (sources_noise + 1e-6)
        return torch.sigmoid(gain(_spatial_frequency) + gain(deviation) - exposure - noise)


class ClipScorer:
    """The paper's evaluator: sigmoid(mean cos(image, positive) - mean cos(image, negative))
    with CLIP ViT-B/32 from ``open_clip`` and a local checkpoint (nothing is downloaded)."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise RuntimeError("the CLIP scorer needs the Python package 'open_clip_torch', "
                               "which is not installed: pip install 'open_clip_torch' (or "
                               "the project's extra: pip install 'ivtuning_ros[clip]'); or "
                               "use the offline scorer") from exc
        if not Path(checkpoint).is_file():
            # open_clip would read any other string as the name of weights to download.
            raise FileNotFoundError(f"CLIP checkpoint {checkpoint} is not a file: give the "
                                    f"path of a local open_clip ViT-B/32 checkpoint, or leave "
                                    f"--clip out for the offline scorer")
        model = open_clip.create_model("ViT-B-32", pretrained=str(checkpoint))
        self.model = model.eval().to(device)
        tokens = open_clip.get_tokenizer("ViT-B-32")(list(POSITIVE + NEGATIVE)).to(device)
        with torch.no_grad():
            self.text = F.normalize(self.model.encode_text(tokens), dim=-1)
        self.mean = torch.tensor([0.4815, 0.4578, 0.4082], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.2686, 0.2613, 0.2758], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def score(self, fused: Tensor, ir: Tensor, visible: Tensor) -> Tensor:
        image = F.interpolate(fused.clamp(0, 1).expand(-1, 3, -1, -1), size=(224, 224),
                              mode="bilinear", align_corners=False)
        features = F.normalize(self.model.encode_image((image - self.mean) / self.std), dim=-1)
        similarity = features @ self.text.T
        positive, negative = similarity[:, :len(POSITIVE)], similarity[:, len(POSITIVE):]
        return torch.sigmoid(positive.mean(1) - negative.mean(1))
