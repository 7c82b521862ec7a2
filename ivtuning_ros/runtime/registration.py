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


def ir_sampling_grid(homography: np.ndarray, ir_size: tuple[int, int],
                     letterbox: Letterbox) -> Tensor:
    """grid_sample grid (1, in_h, in_w, 2) that warps an IR frame into the letterboxed input.

    For each network-input pixel: undo the letterbox (the same per-axis mapping
    as the RGB bilinear resize), map the RGB pixel through H^-1 into the IR
    frame, normalise for ``align_corners=False``. Input pixels outside the RGB
    image (padding) sample outside the IR frame, i.e. zeros. Computed in float64
    on the host, once per homography and frame size.
    """
    rows, cols = letterbox.valid_slices
    scale_x = letterbox.orig_w / (cols.stop - cols.start)
    scale_y = letterbox.orig_h / (rows.stop - rows.start)
    u = np.arange(letterbox.in_w, dtype=np.float64)
    v = np.arange(letterbox.in_h, dtype=np.float64)
    x = (u - cols.start + 0.5) * scale_x - 0.5
    y = (v - rows.start + 0.5) * scale_y - 0.5
    xx, yy = np.meshgrid(x, y)
    inside = ((xx > -0.5) & (xx < letterbox.orig_w - 0.5)
              & (yy > -0.5) & (yy < letterbox.orig_h - 0.5))
    points = np.stack([xx, yy, np.ones_like(xx)], axis=-1) @ np.linalg.inv(homography).T
    with np.errstate(divide="ignore", invalid="ignore"):
        src = points[..., :2] / points[..., 2:]
    ir_h, ir_w = ir_size
    grid = np.stack([(src[..., 0] + 0.5) / ir_w * 2 - 1, (src[..., 1] + 0.5) / ir_h * 2 - 1],
                    axis=-1)
    grid[~inside | ~np.isfinite(grid).all(axis=-1)] = -2.0  # outside: zeros padding
    return torch.from_numpy(grid.astype(np.float32))[None]


def rgb_geometry_grid(homography: np.ndarray, ir_size: tuple[int, int],
                      rgb_size: tuple[int, int]) -> Tensor:
    """`ir_sampling_grid` at the RGB frame's own size (no letterbox): (1, H, W, 2)."""
    height, width = rgb_size
    identity = Letterbox(1.0, 0.0, 0.0, height, width, height, width)
    return ir_sampling_grid(homography, ir_size, identity)


def warp_ir_to_rgb(ir_unit: Tensor, homography: np.ndarray, rgb_size: tuple[int, int],
                   grid: Tensor | None = None) -> Tensor:
    """IR (h, w) float -> IR in RGB geometry (H, W): for display and calibration checks.

    ``grid`` from `rgb_geometry_grid` skips recomputing it for every frame.
    """
    if grid is None:
        grid = rgb_geometry_grid(homography, tuple(ir_unit.shape), rgb_size)
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
