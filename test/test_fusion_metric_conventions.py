"""Each image-fusion metric against an independent implementation of the convention it
follows (README "Fusion metrics: conventions"), on a real RoadScene pair: Qabf as VIFB's
MATLAB code and CDDFuse's evaluator compute it (zero-padded Sobel), SSIM as scikit-image,
VIF as sewar, EN as scikit-image's entropy, SF / AG / SCD / CC as CDDFuse writes them."""
import math

import cv2
import numpy as np
import pytest
from scipy.signal import convolve2d

from ivtuning_ros.data.pair_folder import read_ir, read_rgb
from ivtuning_ros.image_fusion import metrics
from ivtuning_ros.image_fusion.baselines import average, laplacian_pyramid

from .conftest import ROADSCENE, needs_roadscene

PAIRS = ("FLIR_00060", "FLIR_00006")


def grey_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(IR, visible) of one RoadScene pair as 8-bit grey images (the published evaluators
    read 8-bit files), as float64."""
    ir = read_ir(ROADSCENE / "cropinfrared" / f"{name}.jpg")
    rgb = read_rgb(ROADSCENE / "crop_LR_visible" / f"{name}.jpg")
    return ir.astype(np.float64), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)


def vifb_qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray,
              equal_strengths_quirk: bool = False) -> float:
    """Q^{AB/F} step by step as VIFB's MATLAB code and CDDFuse's evaluator: 'same'
    convolution (zero padding) with the Sobel pair, angle pi/2 where the x response is 0,
    G = min / max; with ``equal_strengths_quirk``, G = g_F where the strengths are equal,
    as CDDFuse's code has it (SEED_METHODS.md 3.8 says to avoid it)."""
    h_y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    h_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

    def edges(image):
        sx, sy = convolve2d(image, h_x, mode="same"), convolve2d(image, h_y, mode="same")
        strength = np.sqrt(sx * sx + sy * sy)
        angle = np.empty_like(image)
        for index in np.ndindex(image.shape):
            angle[index] = (math.pi / 2 if sx[index] == 0
                            else math.atan(sy[index] / sx[index]))
        return strength, angle

    def q(g_s, a_s, g_f, a_f):
        ratio = np.empty_like(g_s)
        larger, equal = g_s > g_f, g_s == g_f
        smaller = ~(larger | equal)
        ratio[larger] = g_f[larger] / g_s[larger]
        ratio[equal] = g_f[equal] if equal_strengths_quirk else 1.0
        ratio[smaller] = g_s[smaller] / g_f[smaller]
        orientation = 1 - np.abs(a_s - a_f) / (math.pi / 2)
        return (0.9994 / (1 + np.exp(-15 * (ratio - 0.5)))
                * 0.9879 / (1 + np.exp(-22 * (orientation - 0.8))))

    g_a, a_a = edges(a)
    g_b, a_b = edges(b)
    g_f, a_f = edges(fused)
    numerator = np.sum(q(g_a, a_a, g_f, a_f) * g_a + q(g_b, a_b, g_f, a_f) * g_b)
    return float(numerator / np.sum(g_a + g_b))


def cddfuse_average_gradient(image: np.ndarray) -> float:
    gx, gy = np.zeros_like(image), np.zeros_like(image)
    gx[:, 0], gx[:, -1] = image[:, 1] - image[:, 0], image[:, -1] - image[:, -2]
    gx[:, 1:-1] = (image[:, 2:] - image[:, :-2]) / 2
    gy[0, :], gy[-1, :] = image[1, :] - image[0, :], image[-1, :] - image[-2, :]
    gy[1:-1, :] = (image[2:, :] - image[:-2, :]) / 2
    return float(np.mean(np.sqrt((gx ** 2 + gy ** 2) / 2)))


def cddfuse_spatial_frequency(image: np.ndarray) -> float:
    return float(np.sqrt(np.mean((image[:, 1:] - image[:, :-1]) ** 2)
                         + np.mean((image[1:, :] - image[:-1, :]) ** 2)))


def entropy_bits(*images: np.ndarray) -> float:
    """Joint Shannon entropy (bits) of the rounded images' value tuples."""
    stacked = np.stack([np.round(image).ravel() for image in images], axis=1)
    _, counts = np.unique(stacked, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def independent_metrics(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    skimage_measure = pytest.importorskip("skimage.measure")
    skimage_metrics = pytest.importorskip("skimage.metrics")
    sewar = pytest.importorskip("sewar.full_ref")
    rounded = np.clip(np.round(fused), 0, 255).astype(np.uint8)

    def mi(x, y):
        return entropy_bits(x) + entropy_bits(y) - entropy_bits(x, y)

    def corr(x, y):
        return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    def ssim(x, y):
        return skimage_metrics.structural_similarity(
            x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=True, data_range=255)

    return {
        "EN": skimage_measure.shannon_entropy(rounded, base=2),
        "SD": float(np.sqrt(np.mean((fused - fused.mean()) ** 2))),
        "SF": cddfuse_spatial_frequency(fused), "AG": cddfuse_average_gradient(fused),
        "MI": mi(fused, a) + mi(fused, b),
        "SCD": corr(fused - b, a) + corr(fused - a, b),
        "CC": (corr(a, fused) + corr(b, fused)) / 2,
        "VIF": sewar.vifp(a, fused) + sewar.vifp(b, fused),
        "Qabf": vifb_qabf(fused, a, b),
        "SSIM": ssim(fused, a) + ssim(fused, b),
    }


@needs_roadscene
@pytest.mark.parametrize("name", PAIRS)
def test_every_metric_matches_its_reference_convention_on_a_real_pair(name):
    ir, visible = grey_pair(name)
    # The baselines work on [0, 1]; the fused image is saved and measured as 8-bit.
    fused = np.round(laplacian_pyramid(ir / 255, visible / 255).astype(np.float64) * 255)
    ours = metrics.fusion_metrics(fused, ir, visible)
    reference = independent_metrics(fused, ir, visible)
    assert set(ours) == set(metrics.METRICS) == set(reference)
    for metric in metrics.METRICS:
        assert ours[metric] == pytest.approx(reference[metric], rel=1e-6, abs=1e-9), metric
    # Unrounded, where the two Sobel sums can round differently, and against the code
    # with its equal-strengths quirk: within the 1e-3.
    fused = average(ir, visible) + 0.3
    for quirk in (False, True):
        assert abs(metrics.qabf(fused, ir, visible)
                   - vifb_qabf(fused, ir, visible, equal_strengths_quirk=quirk)) < 1e-3


@needs_roadscene
def test_replicated_borders_are_a_named_other_convention_that_reads_lower():
    ir, visible = grey_pair(PAIRS[0])
    fused = average(ir, visible)
    published = metrics.qabf(fused, ir, visible)
    replicated = metrics.qabf(fused, ir, visible, border="nearest")
    assert replicated < published - 0.01
    with pytest.raises(ValueError, match="border must be one of"):
        metrics.qabf(fused, ir, visible, border="reflect")
