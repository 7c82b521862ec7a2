"""The standard image-fusion metrics (SEED_METHODS.md section 3.8), in numpy/scipy.

F is the fused image, A the infrared and B the visible source, all grey and on the 8-bit
scale (0-255, float). Two-source metrics report the sum (or the mean for CC) over A and B.
MI is in bits.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "CC", "VIF", "Qabf", "SSIM")


def entropy(image: np.ndarray) -> float:
    """EN: Shannon entropy (bits) of the 256-bin histogram of the rounded image."""
    counts = np.bincount(np.clip(np.round(image), 0, 255).astype(np.int64).ravel(),
                         minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def standard_deviation(image: np.ndarray) -> float:
    return float(np.std(image))


def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2), mean squared horizontal / vertical first differences."""
    row = np.mean(np.diff(image, axis=1) ** 2)
    column = np.mean(np.diff(image, axis=0) ** 2)
    return float(np.sqrt(row + column))


def average_gradient(image: np.ndarray) -> float:
    """AG = mean(sqrt((dx^2 + dy^2) / 2)), central differences (one-sided at borders)."""
    dy, dx = np.gradient(image)
    return float(np.mean(np.sqrt((dx ** 2 + dy ** 2) / 2)))


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI(X, Y) in bits from the 256 x 256 joint histogram of the rounded images."""
    joint, _, _ = np.histogram2d(np.clip(np.round(x), 0, 255).ravel(),
                                 np.clip(np.round(y), 0, 255).ravel(), bins=256,
                                 range=[[0, 256], [0, 256]])
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log2(joint[nonzero] / (px @ py)[nonzero])).sum())


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def scd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the correlations of differences: corr(F - B, A) + corr(F - A, B)."""
    return _corr(fused - b, a) + _corr(fused - a, b)


def correlation(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """CC = (corr(A, F) + corr(B, F)) / 2."""
    return (_corr(a, fused) + _corr(b, fused)) / 2


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax ** 2) / (2 * sigma ** 2))
    window = np.outer(g, g)
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Correlation with ``window`` keeping only fully covered pixels ('valid')."""
    full = ndimage.correlate(image, window, mode="constant")
    half = window.shape[0] // 2
    return full[half:image.shape[0] - half, half:image.shape[1] - half]


def vif(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain VIF (VIFp, Sheikh and Bovik 2006): four scales, Gaussian windows of
    2^(5-s)+1 pixels with sigma = N/5, noise variance 2; VIF(R, R) = 1."""
    noise = 2.0
    numerator = denominator = 0.0
    reference, distorted = reference.astype(np.float64), distorted.astype(np.float64)
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        window = _gaussian_window(size, size / 5)
        if scale > 1:
            reference = _filter_valid(reference, window)[::2, ::2]
            distorted = _filter_valid(distorted, window)[::2, ::2]
        mu_r, mu_d = _filter_valid(reference, window), _filter_valid(distorted, window)
        var_r = np.maximum(_filter_valid(reference ** 2, window) - mu_r ** 2, 0)
        var_d = np.maximum(_filter_valid(distorted ** 2, window) - mu_d ** 2, 0)
        cov = _filter_valid(reference * distorted, window) - mu_r * mu_d
        gain = cov / (var_r + 1e-10)
        var_v = var_d - gain * cov
        gain[var_r < 1e-10] = 0
        var_v[var_r < 1e-10] = var_d[var_r < 1e-10]
        var_r[var_r < 1e-10] = 0
        gain[var_d < 1e-10] = 0
        var_v[var_d < 1e-10] = 0
        var_v[gain < 0] = var_d[gain < 0]
        gain[gain < 0] = 0
        var_v = np.maximum(var_v, 1e-10)
        numerator += np.sum(np.log10(1 + gain ** 2 * var_r / (var_v + noise)))
        denominator += np.sum(np.log10(1 + var_r / noise))
    return float(numerator / denominator) if denominator > 0 else 0.0


QABF_BORDERS = ("zero", "nearest")


def _sobel_edges(image: np.ndarray, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength and orientation. ``zero``: 'same' convolution with zero padding, as
    VIFB's MATLAB ``conv2`` and CDDFuse's ``convolve2d``; orientation pi/2 where the
    horizontal response is 0, as both codes set it. Their true convolution flips the x
    kernel's sign, which matters against that fixed pi/2, so sx is negated to match."""
    mode = "constant" if border == "zero" else "nearest"
    sx = -ndimage.sobel(image, axis=1, mode=mode)
    sy = ndimage.sobel(image, axis=0, mode=mode)
    angle = np.full(image.shape, np.pi / 2)
    nonzero = sx != 0
    angle[nonzero] = np.arctan(sy[nonzero] / sx[nonzero])
    return np.hypot(sx, sy), angle


def _edge_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray,
                       a_f: np.ndarray) -> np.ndarray:
    """Q^{SF} per pixel, G = min / max of the strengths (1 where both are 0, where the
    weight is 0 anyway). CDDFuse's code takes G = g_F where the strengths are equal, a quirk
    (SEED_METHODS.md 3.8) that changes real images by under 1e-4 and F = A = B a lot."""
    larger = np.maximum(g_s, g_f)
    ratio = np.where(larger > 0, np.minimum(g_s, g_f) / np.where(larger > 0, larger, 1), 1.0)
    orientation = 1 - np.abs(a_s - a_f) / (np.pi / 2)
    q_g = 0.9994 / (1 + np.exp(-15 * (ratio - 0.5)))
    q_a = 0.9879 / (1 + np.exp(-22 * (orientation - 0.8)))
    return q_g * q_a


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray, border: str = "zero") -> float:
    """Q^{AB/F} (Xydeas and Petrovic): edge strength and orientation preserved from each
    source, weighted by the source's edge strength, with VIFB's and CDDFuse's zero-padded
    borders (``border="zero"``); F = A = B gives 0.97479. ``border="nearest"`` replicates
    the border pixels instead, which reads 3-34% lower on real images: it is not
    comparable with published tables."""
    if border not in QABF_BORDERS:
        raise ValueError(f"border must be one of {QABF_BORDERS}, got '{border}'")
    g_f, a_f = _sobel_edges(fused, border)
    g_a, a_a = _sobel_edges(a, border)
    g_b, a_b = _sobel_edges(b, border)
    weight = (g_a + g_b).sum()
    if weight == 0:
        return 0.0
    preserved = (_edge_preservation(g_a, a_a, g_f, a_f) * g_a
                 + _edge_preservation(g_b, a_b, g_f, a_f) * g_b)
    return float(preserved.sum() / weight)


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM (Wang et al. 2004): Gaussian 11 x 11 window, sigma 1.5, 8-bit constants; the
    mean over the image with reflected borders (scikit-image's convention)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)

    def blur(image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, 1.5, truncate=3.5, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    # Sample covariances, as scikit-image (N / (N - 1) for the 11 x 11 window).
    correction = 121 / 120
    var_x = (blur(x * x) - mu_x ** 2) * correction
    var_y = (blur(y * y) - mu_y ** 2) * correction
    cov = (blur(x * y) - mu_x * mu_y) * correction
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1)
                                                        * (var_x + var_y + c2))
    pad = 5  # scikit-image averages away the borders the window does not cover
    return float(index[pad:-pad, pad:-pad].mean())


def fusion_metrics(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """All ten metrics of one fused image against infrared ``a`` and visible ``b``."""
    fused, a, b = (np.asarray(x, dtype=np.float64) for x in (fused, a, b))
    return {
        "EN": entropy(fused), "SD": standard_deviation(fused),
        "SF": spatial_frequency(fused), "AG": average_gradient(fused),
        "MI": mutual_information(fused, a) + mutual_information(fused, b),
        "SCD": scd(fused, a, b), "CC": correlation(fused, a, b),
        "VIF": vif(a, fused) + vif(b, fused), "Qabf": qabf(fused, a, b),
        "SSIM": ssim(fused, a) + ssim(fused, b),
    }
