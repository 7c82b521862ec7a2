"""IR -> RGB registration calibration: a homography from point pairs, from both cameras'
intrinsics and extrinsics, or refined automatically from an RGB + IR image pair.

Pixel coordinates follow OpenCV (integer coordinates are pixel centres) and a homography
H maps IR pixels to RGB pixels, x_rgb ~ H @ [x_ir, y_ir, 1], as the node's ``homography``
parameter does. No ROS imports here: the result is a parameters-file snippet the node reads
(`ivtuning calibrate`, `commands.calibrate`, writes one).
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import yaml

from ..data.pair_folder import read_ir, read_rgb
from .registration import (
    homography_from_calibration,
    rotation_from_rpy,
    scaling_homography,
    validate_homography,
)

NODE_NAME = "ivtuning_perception"
POINT_KEYS = ("ir_x", "ir_y", "rgb_x", "rgb_y")
RANSAC_THRESHOLD_PX = 3.0
COLLINEAR_TOLERANCE = 1e-3  # smallest / largest singular value of the centred points
RANK_TOLERANCE = 1e-6  # 8th / 1st singular value of the DLT system
DEGENERATE = ("the point pairs do not fix a homography (three of four on one line, or "
              "repeated points): pick points spread over the image")
IR_PERCENTILES = (1.0, 99.0)
WORK_WIDTH = 640  # px: the finest alignment level; wider images are shrunk to it
PYRAMID_LEVELS = 3  # alignment levels, each half the width of the next
EDGE_SIGMA = 1.5  # px at each level: blur of the edge maps
ITERATIONS = 100  # most ECC iterations per level and motion model
COARSE_EPS, FINE_EPS = 1e-4, 1e-5  # ECC stops when its correlation changes less
# Alignment-score gain an estimate needs over the start, and a homography over the affine
# correction: real pairs gain about 0.01 from fitting parallax and clutter (RoadScene).
SCORE_MARGIN = 0.02
_SAMPLE_LINEAR = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # dst(x) = src(H x)
_SAMPLE_NEAREST = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP


class CalibrationError(ValueError):
    """Calibration input that cannot give a homography; the message says what to change."""


# Point pairs ------------------------------------------------------------------------------
def homography_from_points(ir_points: np.ndarray, rgb_points: np.ndarray,
                           ransac: bool = False) -> tuple[np.ndarray, float]:
    """Least-squares homography from N >= 4 pairs of (N, 2) pixel points; RANSAC (outliers
    beyond 3 px ignored) when ``ransac`` and N > 8. Returns (H, RMS reprojection error in RGB
    pixels over all pairs)."""
    ir, rgb = _point_array(ir_points, "ir_points"), _point_array(rgb_points, "rgb_points")
    if len(ir) != len(rgb):
        raise CalibrationError(f"{len(ir)} IR points but {len(rgb)} RGB points: give pairs")
    if len(ir) < 4:
        raise CalibrationError(f"a homography needs at least 4 point pairs, got {len(ir)}")
    _check_spread(ir, "IR")
    _check_spread(rgb, "RGB")
    _check_determined(ir, rgb)
    method = cv2.RANSAC if ransac and len(ir) > 8 else 0
    homography, _ = cv2.findHomography(ir, rgb, method, RANSAC_THRESHOLD_PX)
    if homography is None or not np.isfinite(homography).all() \
            or abs(np.linalg.det(homography)) < 1e-12:
        raise CalibrationError(DEGENERATE)
    homography = homography / homography[2, 2]
    return homography, reprojection_error(homography, ir, rgb)


def reprojection_error(homography: np.ndarray, ir_points: np.ndarray,
                       rgb_points: np.ndarray) -> float:
    """RMS distance in RGB pixels between H-mapped IR points and their RGB partners."""
    ir, rgb = _point_array(ir_points, "ir_points"), _point_array(rgb_points, "rgb_points")
    mapped = cv2.perspectiveTransform(ir[:, None], np.asarray(homography, np.float64))[:, 0]
    return float(np.sqrt(np.mean(np.sum((mapped - rgb) ** 2, axis=1))))


def _point_array(points, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise CalibrationError(f"{name} must be finite (N, 2) pixel coordinates, got shape "
                               f"{array.shape}")
    return array


def _check_determined(ir: np.ndarray, rgb: np.ndarray) -> None:
    """The pairs fix one homography: the DLT system (Hartley-normalised) has rank 8.
    OpenCV returns some matrix even when they do not (three of four points on a line)."""
    a, b = _normalised(ir), _normalised(rgb)
    rows = []
    for (x, y), (u, v) in zip(a, b, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    singular = np.linalg.svd(np.array(rows), compute_uv=False)
    if singular[7] < RANK_TOLERANCE * singular[0]:
        raise CalibrationError(DEGENERATE)


def _normalised(points: np.ndarray) -> np.ndarray:
    """Centred, scaled to a mean distance of sqrt(2): a well-conditioned DLT."""
    centred = points - points.mean(axis=0)
    return centred * np.sqrt(2) / np.mean(np.linalg.norm(centred, axis=1))


def _check_spread(points: np.ndarray, name: str) -> None:
    """All points on one line (or one spot) fix no homography."""
    singular = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if singular[0] == 0 or singular[1] / singular[0] < COLLINEAR_TOLERANCE:
        raise CalibrationError(f"the {name} points are collinear: pick points spread over "
                               "the image, not along one line")


# Camera intrinsics and extrinsics ---------------------------------------------------------
def homography_from_camera_info(k_ir: np.ndarray, k_rgb: np.ndarray, translation,
                                rotation_rpy, distance: float) -> np.ndarray:
    """H of a scene plane at ``distance`` m facing the IR camera; ``translation`` (m) and
    ``rotation_rpy`` (rad) place the IR optical frame in the RGB optical frame, as the node's
    ``ir_to_rgb_translation`` / ``ir_to_rgb_rotation_rpy`` parameters do."""
    return validate_homography(homography_from_calibration(
        np.asarray(k_ir, float).reshape(3, 3), np.asarray(k_rgb, float).reshape(3, 3),
        rotation_from_rpy(*rotation_rpy), np.asarray(translation, float), distance))


def load_camera_info(path: str | Path) -> np.ndarray:
    """K (3x3) from a camera_info YAML as ROS camera_calibration writes it
    (``camera_matrix: {rows: 3, cols: 3, data: [9 values]}``)."""
    data = _load_yaml(path)
    matrix = data.get("camera_matrix") if isinstance(data, dict) else None
    values = matrix.get("data") if isinstance(matrix, dict) else None
    if not isinstance(values, list) or len(values) != 9:
        raise CalibrationError(f"{path}: expected camera_matrix with 9 data values, as "
                               "ROS camera_calibration writes camera_info YAML")
    k = np.array(values, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CalibrationError(f"{path}: camera_matrix needs positive focal lengths fx, fy")
    return k


# Image-based refinement -------------------------------------------------------------------
class _Level(NamedTuple):
    """One pyramid level: both edge maps and the pixel scalings from the full-size images."""
    ir_edges: np.ndarray
    rgb_edges: np.ndarray
    ir_scale: np.ndarray  # full-size IR pixels -> this level's IR pixels
    rgb_scale: np.ndarray  # full-size RGB pixels -> this level's RGB pixels


@dataclass(frozen=True)
class Alignment:
    """What `align_images` found: the homography to use, and the scores it was chosen by."""
    homography: np.ndarray  # the chosen candidate, IR -> RGB
    choice: str  # "start", "affine" or "homography"
    scores: dict[str, float]  # alignment score of each candidate (`_alignment_scores`)
    failure: str  # why the candidates missing from scores did not converge, or ""
    seconds: float


def align_images(rgb: np.ndarray, ir: np.ndarray, start: np.ndarray,
                 iterations: int = ITERATIONS, margin: float = SCORE_MARGIN) -> Alignment:
    """Refine ``start`` (IR -> RGB) on an RGB + IR pair of one scene, never to a worse score.

    Candidates, simplest first: the start, the start corrected by an affine map of the IR
    pixels, and corrected by a homography. One replaces the choice so far only when its
    alignment score beats every simpler candidate's by ``margin``: each added degree of
    freedom must pay for itself. Real pairs are never exactly one homography apart
    (parallax, lens distortion), so a refinement always finds some better-correlating warp;
    a smaller gain is more likely a fit to one part of the scene, extrapolated badly to the
    rest, than a better registration.
    """
    began = time.perf_counter()
    pyramid = _edge_pyramid(rgb, ir)
    candidates, failure = _candidates(pyramid, validate_homography(start), iterations)
    scores = dict(zip(candidates, _alignment_scores(pyramid[-1], candidates.values()),
                      strict=True))
    choice, simpler_best = "start", scores["start"]
    for name, score in scores.items():
        if score >= simpler_best + margin:
            choice = name
        simpler_best = max(simpler_best, score)
    return Alignment(candidates[choice], choice, scores, failure,
                     time.perf_counter() - began)


def refine_homography(rgb: np.ndarray, ir: np.ndarray, initial: np.ndarray,
                      iterations: int = ITERATIONS) -> tuple[np.ndarray, float]:
    """Refine an IR -> RGB homography by aligning edges of an RGB + IR pair of one scene.

    Args:
        rgb: (H, W, 3) uint8, RGB order.
        ir: (h, w) thermal frame of any dtype (8-bit, raw counts, temperature).
        initial: starting 3x3 IR -> RGB homography, within some pixels of the truth.
        iterations: most ECC iterations per pyramid level and motion model.
    Returns:
        (refined H, its alignment score: correlation of the aligned edge maps, 1 = perfect).

    Intensities of the two cameras differ (hot is not bright), so both become gradient-
    magnitude maps, which agree wherever the scene has boundaries. ECC then finds the
    correction W of the IR pixels that best matches the IR edges with the RGB edges sampled
    through initial @ W: first an affine W (well conditioned), then a homography from it.
    Coarse to fine over a pyramid: coarse levels give a wide basin cheaply, the finest
    sub-pixel accuracy.
    """
    pyramid = _edge_pyramid(rgb, ir)
    candidates, failure = _candidates(pyramid, validate_homography(initial), iterations)
    if failure:
        raise CalibrationError(failure)
    refined = candidates["homography"]
    return refined, _alignment_scores(pyramid[-1], (refined,))[0]


def _candidates(pyramid: list[_Level], start: np.ndarray,
                iterations: int) -> tuple[dict[str, np.ndarray], str]:
    """({name: IR -> RGB homography} of the start and of the affine and homography
    corrections that converged, why the others did not or "")."""
    candidates, correction = {"start": start}, np.eye(3)
    for name, motion in (("affine", cv2.MOTION_AFFINE), ("homography", cv2.MOTION_HOMOGRAPHY)):
        try:
            correction = _refine(pyramid, start, correction, motion, iterations)
        except CalibrationError as exc:
            return candidates, str(exc)  # the homography starts from the affine: none either
        candidates[name] = _normalised_h(start @ correction)
    return candidates, ""


def _refine(pyramid: list[_Level], start: np.ndarray, correction: np.ndarray, motion: int,
            iterations: int) -> np.ndarray:
    """ECC coarse to fine for the correction W (full-size IR pixels) of H = start @ W.
    Loose convergence at the coarse levels, since the next level refines anyway; a coarse
    level that does not converge (too little structure left that small) is skipped."""
    for index, level in enumerate(pyramid):
        finest = index == len(pyramid) - 1
        to_level, from_level = level.ir_scale, np.linalg.inv(level.ir_scale)
        try:
            warp = _align(level, _to_level(start, level), to_level @ correction @ from_level,
                          motion, iterations, FINE_EPS if finest else COARSE_EPS)
        except CalibrationError:
            if finest:
                raise
            continue
        correction = from_level @ warp @ to_level
    return correction


def _align(level: _Level, start: np.ndarray, correction: np.ndarray, motion: int,
           iterations: int, eps: float) -> np.ndarray:
    """One ECC run at one level: the IR edges as template, the RGB edges sampled through
    ``start`` (level pixels) as input, so the warp ECC finds is the correction of start."""
    size = level.ir_edges.shape[::-1]
    image = cv2.warpPerspective(level.rgb_edges, start, size, flags=_SAMPLE_LINEAR)
    inside = cv2.warpPerspective(np.ones(level.rgb_edges.shape, np.uint8), start, size,
                                 flags=_SAMPLE_NEAREST)
    rows = 3 if motion == cv2.MOTION_HOMOGRAPHY else 2
    warp = (correction / correction[2, 2])[:rows].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, eps)
    try:
        _, warp = cv2.findTransformECC(level.ir_edges, image, warp, motion, criteria, inside,
                                       1)  # 1: no extra blur, the edge maps have theirs
    except cv2.error as exc:
        raise CalibrationError("edge alignment (ECC) did not converge: start closer (give "
                               "--points or --camera-info), or use an image pair with more "
                               f"structure seen by both cameras ({_cv_reason(exc)})") from None
    if rows == 2:
        warp = np.vstack([warp, [0.0, 0.0, 1.0]])
    return warp.astype(np.float64)


def _alignment_scores(level: _Level, homographies) -> list[float]:
    """Correlation of the IR edge map with the RGB edge map warped by each full-size
    homography, all over the IR pixels that every one of them maps inside the RGB image:
    comparable scores (a warp that pushes hard-to-match pixels out of view gains nothing)."""
    scaled = [_to_level(h, level) for h in homographies]
    size = level.ir_edges.shape[::-1]
    inside = np.ones(level.ir_edges.shape, bool)
    for homography in scaled:
        ones = np.ones(level.rgb_edges.shape, np.uint8)
        inside &= cv2.warpPerspective(ones, homography, size, flags=_SAMPLE_NEAREST) > 0
    template = level.ir_edges[inside]
    scores = []
    for homography in scaled:
        warped = cv2.warpPerspective(level.rgb_edges, homography, size, flags=_SAMPLE_LINEAR)
        scores.append(_correlation(template, warped[inside]))
    return scores


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation, as ECC maximises; 0 for no common pixels."""
    if not a.size:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / norm if norm > 0 else 0.0


def _to_level(homography: np.ndarray, level: _Level) -> np.ndarray:
    """Full-size IR -> RGB homography in this level's pixels."""
    return level.rgb_scale @ homography @ np.linalg.inv(level.ir_scale)


def _normalised_h(homography: np.ndarray) -> np.ndarray:
    return validate_homography(homography / homography[2, 2])


def _edge_pyramid(rgb: np.ndarray, ir: np.ndarray) -> list[_Level]:
    """Edge-map levels, coarsest first; the finest at most WORK_WIDTH wide, since sub-pixel
    accuracy there is within a pixel of a larger image too, at a fraction of the time."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or ir.ndim != 2:
        raise CalibrationError(f"need an (H, W, 3) RGB image and an (h, w) IR image, got "
                               f"shapes {rgb.shape} and {ir.shape}")
    rgb_gray = cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2GRAY)
    ir_gray = ir_to_8bit(ir)
    levels = []
    for halvings in range(PYRAMID_LEVELS - 1, -1, -1):
        width = WORK_WIDTH / 2 ** halvings
        (ir_edges, ir_scale), (rgb_edges, rgb_scale) = (_level_edges(ir_gray, width),
                                                        _level_edges(rgb_gray, width))
        levels.append(_Level(ir_edges, rgb_edges, ir_scale, rgb_scale))
    return levels


def _level_edges(gray: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(edge map of ``gray`` shrunk to at most ``width`` px wide, full-size -> level pixel
    scaling)."""
    height, full_width = gray.shape
    factor = min(1.0, width / full_width)
    size = (max(8, round(full_width * factor)), max(8, round(height * factor)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if factor < 1 else gray
    return _edges(small), scaling_homography(height, full_width, size[1], size[0])


def ir_to_8bit(ir: np.ndarray) -> np.ndarray:
    """Any-dtype IR frame -> uint8, the 1st..99th percentile stretched to 0..255."""
    values = np.asarray(ir, dtype=np.float32)
    low, high = np.percentile(values, IR_PERCENTILES)
    scaled = (values - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def _edges(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, blurred EDGE_SIGMA px: float32 in [0, 1]. The same blur in
    each level's pixels doubles, relative to the scene, at each coarser level."""
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), EDGE_SIGMA / 2)
    magnitude = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3),
                              cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3))
    magnitude = cv2.GaussianBlur(magnitude, (0, 0), EDGE_SIGMA)
    return magnitude / max(float(magnitude.max()), 1e-6)


def _cv_reason(exc: cv2.error) -> str:
    return (exc.err or str(exc)).strip().splitlines()[-1]


# Node parameters ------------------------------------------------------------------------
def params_snippet(homography: np.ndarray, node_name: str = NODE_NAME) -> str:
    """A parameters-file YAML snippet that sets the node's homography registration."""
    matrix = validate_homography(homography)
    values = [float(v) for v in (matrix / matrix[2, 2]).reshape(-1)]
    document = {node_name: {"ros__parameters": {"registration": "homography",
                                                "homography": values}}}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None)


def homography_from_params(path: str | Path, node_name: str = NODE_NAME) -> np.ndarray:
    """The homography of a parameters file such as `params_snippet` writes."""
    data = _load_yaml(path)
    data = data if isinstance(data, dict) else {}
    section = data.get(node_name) or data.get(f"/{node_name}") or data.get("/**") or {}
    values = section.get("ros__parameters", {}).get("homography")
    if not isinstance(values, list) or len(values) != 9:
        raise CalibrationError(f"{path}: no 9-value 'homography' parameter for node "
                               f"'{node_name}'")
    return validate_homography(np.array(values, dtype=np.float64).reshape(3, 3))


# Files ------------------------------------------------------------------------------------
def load_point_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(IR points, RGB points), each (N, 2), from a file of pairs ir_x, ir_y, rgb_x, rgb_y:
    CSV (4 numbers a row, an optional header row naming the columns) or YAML (a list of
    mappings with those keys or of 4-number lists, optionally under a top-level ``pairs``)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        rows = _yaml_rows(path)
    else:
        rows = _csv_rows(path)
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError:
        raise CalibrationError(f"{path}: every pair needs 4 numbers "
                               f"({', '.join(POINT_KEYS)})") from None
    if table.ndim != 2 or table.shape[1] != 4:
        raise CalibrationError(f"{path}: every pair needs 4 numbers ({', '.join(POINT_KEYS)})")
    return table[:, :2], table[:, 2:]


def _csv_rows(path: Path) -> list[list[str]]:
    _require_file(path)
    with path.open(newline="") as stream:
        rows = [row for row in csv.reader(stream) if row and any(c.strip() for c in row)]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # the header row
    return [[c.strip() for c in row] for row in rows]


def _yaml_rows(path: Path) -> list:
    data = _load_yaml(path)
    if isinstance(data, dict):
        data = data.get("pairs")
    if not isinstance(data, list):
        raise CalibrationError(f"{path}: expected a list of point pairs (or 'pairs: [...]')")
    try:
        return [[row[k] for k in POINT_KEYS] if isinstance(row, dict) else row for row in data]
    except KeyError as exc:
        raise CalibrationError(f"{path}: a pair lacks {exc}; keys are "
                               f"{', '.join(POINT_KEYS)}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_yaml(path: str | Path):
    path = Path(path)
    _require_file(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML ({exc})") from None


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")


def load_image_pair(rgb_path: str | Path, ir_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (H, W, 3) uint8 in RGB order, IR (h, w) at its stored depth) from image files,
    read as every data set reads them."""
    return read_rgb(Path(rgb_path)), read_ir(Path(ir_path))
