"""IR -> RGB registration calibration: a homography from point pairs, from both cameras'
intrinsics and extrinsics, or refined automatically from an RGB + IR image pair.

Pixel coordinates follow OpenCV (integer coordinates are pixel centres) and a homography
H maps IR pixels to RGB pixels, x_rgb ~ H @ [x_ir, y_ir, 1], as the node's ``homography``
parameter does. No ROS imports here: the result is a parameters-file snippet the node reads.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
import yaml

from .runtime.registration import (
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
EDGE_BLUR = (1 / 160, 1 / 960)  # coarse, fine: edge-map blur sigma / image width


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
def refine_homography(rgb: np.ndarray, ir: np.ndarray, initial: np.ndarray,
                      iterations: int = 200) -> tuple[np.ndarray, float]:
    """Refine an IR -> RGB homography by aligning edges of an RGB + IR pair of one scene.

    Args:
        rgb: (H, W, 3) uint8, RGB order.
        ir: (h, w) thermal frame of any dtype (8-bit, raw counts, temperature).
        initial: starting 3x3 IR -> RGB homography, within some pixels of the truth.
        iterations: most ECC iterations per blur stage.
    Returns:
        (refined H, ECC correlation coefficient of the aligned edge maps, 1 = perfect).

    Intensities of the two cameras differ (hot is not bright), so both become gradient-
    magnitude maps, which agree wherever the scene has boundaries. ECC estimates a warp from
    its template's pixels to its input's pixels; with the IR edges as template and the RGB
    edges as input, that warp is the IR -> RGB homography itself. A strongly blurred stage
    first (a wide basin), then a lightly blurred one (sub-pixel accuracy).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or ir.ndim != 2:
        raise CalibrationError(f"need an (H, W, 3) RGB image and an (h, w) IR image, got "
                               f"shapes {rgb.shape} and {ir.shape}")
    ir_gray = ir_to_8bit(ir)
    rgb_gray = cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2GRAY)
    homography = validate_homography(initial)
    score = 0.0
    for blur in EDGE_BLUR:
        homography, score = _align(_edges(ir_gray, blur), _edges(rgb_gray, blur), homography,
                                   iterations)
    return homography, score


def _align(template: np.ndarray, image: np.ndarray, homography: np.ndarray,
           iterations: int) -> tuple[np.ndarray, float]:
    """One ECC run: template (IR geometry) -> image (RGB geometry) homography."""
    warp = (homography / homography[2, 2]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-6)
    try:
        score, warp = cv2.findTransformECC(template, image, warp, cv2.MOTION_HOMOGRAPHY,
                                           criteria, None, 5)
    except cv2.error as exc:
        raise CalibrationError("edge alignment (ECC) did not converge: start closer (give "
                               "--points or --camera-info), or use an image pair with more "
                               f"structure seen by both cameras ({_cv_reason(exc)})") from None
    refined = validate_homography(warp.astype(np.float64))
    return refined / refined[2, 2], float(score)


def ir_to_8bit(ir: np.ndarray) -> np.ndarray:
    """Any-dtype IR frame -> uint8, the 1st..99th percentile stretched to 0..255."""
    values = np.asarray(ir, dtype=np.float32)
    low, high = np.percentile(values, IR_PERCENTILES)
    scaled = (values - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def _edges(gray: np.ndarray, blur: float) -> np.ndarray:
    """Sobel gradient magnitude blurred by ``blur`` x image width (at least 1 px): float32
    in [0, 1]. Relative to the width, so both cameras' maps blur a similar share of the
    scene."""
    sigma = max(1.0, gray.shape[1] * blur)
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), sigma / 2)
    magnitude = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3),
                              cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3))
    magnitude = cv2.GaussianBlur(magnitude, (0, 0), sigma)
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
    """(RGB (H, W, 3) uint8 in RGB order, IR (h, w) at its stored depth) from image files."""
    rgb = _read_image(Path(rgb_path), cv2.IMREAD_COLOR)
    ir = _read_image(Path(ir_path), cv2.IMREAD_UNCHANGED)
    if ir.ndim == 3:
        ir = ir[..., 0]  # a thermal frame saved as colour: its channels are equal
    return cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB), ir


def _read_image(path: Path, flags: int) -> np.ndarray:
    _require_file(path)
    image = cv2.imread(str(path), flags)
    if image is None:
        raise CalibrationError(f"{path}: not an image OpenCV can read (PNG, TIFF, JPEG...)")
    return image


# Command line -----------------------------------------------------------------------------
def add_calibrate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "calibrate", help="IR -> RGB homography for the node's 'homography' registration",
        description="Compute the IR -> RGB pixel homography from point pairs, from both "
                    "cameras' camera_info and extrinsics, or by aligning an RGB + IR image "
                    "pair (starting from the points, the camera_info, or the image sizes), "
                    "and write it as a node parameters snippet.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--points", metavar="FILE",
                        help="CSV or YAML of pairs ir_x, ir_y, rgb_x, rgb_y (at least 4)")
    source.add_argument("--camera-info", nargs=2, metavar=("RGB_INFO", "IR_INFO"),
                        help="camera_info YAML files of both cameras (camera_calibration)")
    parser.add_argument("--ransac", action="store_true",
                        help="--points: ignore outlier pairs (needs more than 8 pairs)")
    parser.add_argument("--translation", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="--camera-info: IR camera origin in the RGB optical frame, m "
                             "(default 0 0 0)")
    parser.add_argument("--rpy", type=float, nargs=3, metavar=("R", "P", "Y"),
                        help="--camera-info: IR optical frame orientation in the RGB optical "
                             "frame, rad (default 0 0 0)")
    parser.add_argument("--distance", type=float,
                        help="--camera-info: scene plane distance, m (default 10)")
    parser.add_argument("--images", nargs=2, metavar=("RGB_IMAGE", "IR_IMAGE"),
                        help="refine by edge alignment of this image pair of one scene")
    parser.add_argument("--iterations", type=int, default=200,
                        help="--images: most alignment iterations (default 200)")
    parser.add_argument("--node-name", default=NODE_NAME,
                        help=f"node name in the snippet (default {NODE_NAME})")
    parser.add_argument("--out", default="out/calibration.yaml",
                        help="parameters snippet to write (default out/calibration.yaml)")
    parser.set_defaults(run=run_calibrate_command)
    return parser


def run_calibrate_command(args: argparse.Namespace) -> int:
    """Run ``calibrate``: compute, print a short report, write the snippet."""
    if not (args.points or args.camera_info or args.images):
        raise CalibrationError("calibrate needs --points, --camera-info or --images")
    _check_option_use(args)
    report = []
    ir_points = rgb_points = None
    if args.points:
        ir_points, rgb_points = load_point_pairs(args.points)
        homography, rms = homography_from_points(ir_points, rgb_points, args.ransac)
        report.append(f"point pairs: {len(ir_points)}, reprojection RMS {rms:.3f} px")
    elif args.camera_info:
        homography = homography_from_camera_info(
            load_camera_info(args.camera_info[1]), load_camera_info(args.camera_info[0]),
            args.translation or (0.0, 0.0, 0.0), args.rpy or (0.0, 0.0, 0.0),
            10.0 if args.distance is None else args.distance)
        report.append("from camera_info and extrinsics")
    if args.images:
        rgb, ir = load_image_pair(*args.images)
        if not (args.points or args.camera_info):
            homography = scaling_homography(*ir.shape[:2], *rgb.shape[:2])
        homography, score = refine_homography(rgb, ir, homography, args.iterations)
        report.append(f"edge alignment: ECC correlation {score:.3f}")
        if ir_points is not None:
            rms = reprojection_error(homography, ir_points, rgb_points)
            report.append(f"point pairs after alignment: reprojection RMS {rms:.3f} px")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(params_snippet(homography, args.node_name))
    print(_format_report(homography, report, out))
    return 0


def _check_option_use(args: argparse.Namespace) -> None:
    extrinsics = (args.translation, args.rpy, args.distance)
    if not args.camera_info and any(v is not None for v in extrinsics):
        raise CalibrationError("--translation, --rpy and --distance go with --camera-info")
    if args.ransac and not args.points:
        raise CalibrationError("--ransac goes with --points")


def _format_report(homography: np.ndarray, lines: list[str], out: Path) -> str:
    rows = [" ".join(f"{v:14.8g}" for v in row) for row in homography]
    return "\n".join(["IR -> RGB homography:", *(f"  [{row} ]" for row in rows), *lines,
                      f"wrote {out} (parameters: registration, homography)"])
