"""IR -> RGB registration by a homography, as `grid_sample` grids.

Pixel coordinates follow OpenCV: integer coordinates are pixel centres. A
homography H maps IR pixels to RGB pixels (x_rgb ~ H @ [x_ir, y_ir, 1]), as
`cv2.warpPerspective(ir, H, (rgb_w, rgb_h))` uses it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.postprocess import Letterbox


def scaling_homography(ir_height: int, ir_width: int, rgb_height: int,
                       rgb_width: int) -> np.ndarray:
    """The homography of two co-located cameras with the same field of view."""
    sx, sy = rgb_width / ir_width, rgb_height / ir_height
    # Pixel centres: x_rgb + 0.5 = (x_ir + 0.5) * sx.
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def validate_homography(homography: np.ndarray) -> np.ndarray:
    """A finite, invertible 3x3 float64 matrix, or ValueError saying what is wrong."""
    matrix = np.asarray(homography, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"homography must be a finite 3x3 matrix, got shape {matrix.shape}")
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError("homography is singular; calibrate IR -> RGB registration again")
    return matrix


def ir_sampling_grid(homography: np.ndarray, ir_size: tuple[int, int], letterbox: Letterbox,
                     device: torch.device | str = "cpu") -> Tensor:
    """grid_sample grid (1, in_h, in_w, 2) float32 on ``device`` that warps an IR frame into
    the letterboxed input.

    For each network-input pixel: undo the letterbox (the same per-axis mapping
    as the RGB bilinear resize), map the RGB pixel through H^-1 into the IR
    frame, normalise for ``align_corners=False``. These three steps compose
    into one 3x3 matrix (float64, on the host); per pixel that leaves one
    projective division, in float32 on the device. Input pixels outside the
    RGB image (padding) sample outside the IR frame, i.e. zeros.
    """
    rows, cols = letterbox.valid_slices
    matrix = _ir_to_normalised(ir_size) @ np.linalg.inv(homography) @ _input_to_rgb(letterbox)
    u = torch.arange(cols.start, cols.stop, dtype=torch.float32, device=device)
    v = torch.arange(rows.start, rows.stop, dtype=torch.float32, device=device)[:, None]
    x, y, w = (a * u + b * v + c for a, b, c in matrix.tolist())
    image = torch.stack([x / w, y / w], dim=-1)  # the input pixels that hold the RGB image
    # -2 lies outside [-1, 1]: padding and non-finite points sample zeros.
    image = torch.where(torch.isfinite(image).all(-1, keepdim=True), image, -2.0)
    grid = torch.full((letterbox.in_h, letterbox.in_w, 2), -2.0, device=device)
    grid[rows, cols] = image
    return grid[None]


def _input_to_rgb(letterbox: Letterbox) -> np.ndarray:
    """3x3 network-input pixel -> RGB pixel, per axis as the RGB bilinear resize maps it."""
    rows, cols = letterbox.valid_slices
    scale_x = letterbox.orig_w / (cols.stop - cols.start)
    scale_y = letterbox.orig_h / (rows.stop - rows.start)
    # Pixel centres: x + 0.5 = (u - cols.start + 0.5) * scale_x.
    return np.array([[scale_x, 0.0, (0.5 - cols.start) * scale_x - 0.5],
                     [0.0, scale_y, (0.5 - rows.start) * scale_y - 0.5],
                     [0.0, 0.0, 1.0]])


def _ir_to_normalised(ir_size: tuple[int, int]) -> np.ndarray:
    """3x3 IR pixel -> grid_sample coordinate in [-1, 1] (``align_corners=False``)."""
    ir_h, ir_w = ir_size
    return np.array([[2.0 / ir_w, 0.0, 1.0 / ir_w - 1.0],
                     [0.0, 2.0 / ir_h, 1.0 / ir_h - 1.0],
                     [0.0, 0.0, 1.0]])


def rgb_geometry_grid(homography: np.ndarray, ir_size: tuple[int, int],
                      rgb_size: tuple[int, int], device: torch.device | str = "cpu") -> Tensor:
    """`ir_sampling_grid` at the RGB frame's own size (no letterbox): (1, H, W, 2)."""
    height, width = rgb_size
    identity = Letterbox(1.0, height, width, height, width)
    return ir_sampling_grid(homography, ir_size, identity, device)


def warp_ir_to_rgb(ir_unit: Tensor, homography: np.ndarray, rgb_size: tuple[int, int],
                   grid: Tensor | None = None) -> Tensor:
    """IR (h, w) float -> IR in RGB geometry (H, W): for display and calibration checks.

    ``grid`` from `rgb_geometry_grid` skips recomputing it for every frame.
    """
    if grid is None:
        grid = rgb_geometry_grid(homography, tuple(ir_unit.shape), rgb_size, ir_unit.device)
    return F.grid_sample(ir_unit[None, None].float(), grid.to(ir_unit.device), mode="bilinear",
                         padding_mode="zeros", align_corners=False)[0, 0]


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll), the ROS roll-pitch-yaw convention."""
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def homography_from_calibration(k_ir: np.ndarray, k_rgb: np.ndarray, rotation: np.ndarray,
                                translation: np.ndarray, distance: float) -> np.ndarray:
    """IR -> RGB pixel homography of a scene plane facing the IR camera at ``distance``.

    With X_rgb = R X_ir + t (the IR camera's pose in the RGB optical frame) and the
    plane n . X_ir = d, n = (0, 0, 1): H = K_rgb (R + t n^T / d) K_ir^-1. Exact on that
    plane; elsewhere the parallax error shrinks with baseline / distance.
    """
    if distance <= 0:
        raise ValueError(f"working distance must be positive, got {distance}")
    normal = np.array([0.0, 0.0, 1.0])
    shift = np.outer(np.asarray(translation, float), normal) / distance
    plane = np.asarray(rotation, float) + shift
    homography = np.asarray(k_rgb, float) @ plane @ np.linalg.inv(np.asarray(k_ir, float))
    return homography / homography[2, 2]
