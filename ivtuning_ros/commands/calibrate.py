"""`ivtuning calibrate`: the IR -> RGB homography from point pairs, camera_info or an image
pair (`runtime.calibration` computes it), written as a node parameters snippet."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..data.pair_folder import PairFolderDataset
from ..runtime.calibration import (
    ITERATIONS,
    NODE_NAME,
    SCORE_MARGIN,
    Alignment,
    CalibrationError,
    align_images,
    homography_from_camera_info,
    homography_from_points,
    load_camera_info,
    load_image_pair,
    load_point_pairs,
    params_snippet,
    reprojection_error,
)
from ..runtime.registration import scaling_homography

SAME_AS_SCALE = "; the node's default 'registration: scale' does the same"


def add_calibrate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "calibrate", help="IR -> RGB homography for the node's 'homography' registration",
        description="Compute the IR -> RGB pixel homography from point pairs, from both "
                    "cameras' camera_info and extrinsics, or by aligning an RGB + IR image "
                    "pair (starting from the points, the camera_info, or the image sizes as "
                    "the node's default 'registration: scale' does), and write it as a node "
                    "parameters snippet. Image alignment keeps the start unless an estimate "
                    "raises the alignment score by --margin, and says which it kept.")
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
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--images", nargs=2, metavar=("RGB_IMAGE", "IR_IMAGE"),
                        help="refine by edge alignment of this image pair of one scene")
    images.add_argument("--folder", metavar="ROOT",
                        help="refine by edge alignment of a pair from this folder of pairs "
                             "(RoadScene, M3FD, LLVIP layouts: RGB and IR sub-folders, same "
                             "file names); the first pair by name unless --pair")
    parser.add_argument("--pair", metavar="NAME",
                        help="--folder: the pair to align, by name (its path below the IR "
                             "folder without extension, e.g. FLIR_00006)")
    parser.add_argument("--iterations", type=int, default=ITERATIONS,
                        help=f"--images/--folder: most alignment iterations per pyramid level "
                             f"(default {ITERATIONS})")
    parser.add_argument("--margin", type=float, default=SCORE_MARGIN,
                        help="--images/--folder: alignment-score gain an estimate needs over "
                             "the start, and a homography over an affine correction (score: "
                             f"edge correlation, 1 = perfect; default {SCORE_MARGIN})")
    parser.add_argument("--node-name", default=NODE_NAME,
                        help=f"node name in the snippet (default {NODE_NAME})")
    parser.add_argument("--out", default="out/calibration.yaml",
                        help="parameters snippet to write (default out/calibration.yaml)")
    parser.set_defaults(run=run_calibrate_command)
    return parser


def run_calibrate_command(args: argparse.Namespace) -> int:
    """Run ``calibrate``: compute, print a short report, write the snippet."""
    _check_option_use(args)
    homography, report, points = _homography_from_options(args)
    if args.images or args.folder:
        homography, lines = _align_image_pair(args, homography)
        report += lines
        if points is not None:
            rms = reprojection_error(homography, *points)
            report.append(f"point pairs after alignment: reprojection RMS {rms:.3f} px")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(params_snippet(homography, args.node_name))
    print(_format_report(homography, report, out))
    return 0


def _homography_from_options(args: argparse.Namespace) -> tuple[np.ndarray | None, list[str],
                                                                tuple | None]:
    """(H or None, report lines, (IR points, RGB points) or None) from --points or
    --camera-info."""
    if args.points:
        points = load_point_pairs(args.points)
        homography, rms = homography_from_points(*points, args.ransac)
        line = f"point pairs: {len(points[0])}, reprojection RMS {rms:.3f} px"
        return homography, [line], points
    if args.camera_info:
        homography = homography_from_camera_info(
            load_camera_info(args.camera_info[1]), load_camera_info(args.camera_info[0]),
            args.translation or (0.0, 0.0, 0.0), args.rpy or (0.0, 0.0, 0.0),
            10.0 if args.distance is None else args.distance)
        return homography, ["from camera_info and extrinsics"], None
    return None, [], None


def _align_image_pair(args: argparse.Namespace,
                      start: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """(H, report lines): ``start`` refined on the --images or --folder pair; the image
    sizes' scaling (the node's 'registration: scale') when there is no start."""
    label, rgb, ir = _image_pair(args)
    scale = start is None
    if scale:
        start = scaling_homography(*ir.shape[:2], *rgb.shape[:2])
    alignment = align_images(rgb, ir, start, args.iterations, args.margin)
    return alignment.homography, _alignment_report(label, alignment, args.margin, scale)


def _alignment_report(label: str, alignment: Alignment, margin: float,
                      scale: bool) -> list[str]:
    """The scores, any estimate that did not converge, and one line on what was kept."""
    scores = alignment.scores
    lines = [f"edge alignment of {label} in {alignment.seconds:.1f} s: alignment score "
             + ", ".join(f"{score:.3f} {name}" for name, score in scores.items())
             + " (edge correlation, 1 = perfect)"]
    missing = [name for name in ("affine", "homography") if name not in scores]
    if missing:
        lines.append(f"no {' or '.join(missing)} estimate: {alignment.failure}")
    estimates = [score for name, score in scores.items() if name != "start"]
    if alignment.choice != "start":
        lines.append(f"used the {alignment.choice} estimate: alignment score "
                     f"{scores['start']:.3f} -> {scores[alignment.choice]:.3f}")
    elif estimates:
        lines.append(f"kept the starting registration: alignment score {scores['start']:.3f} "
                     f"-> {max(estimates):.3f} with the estimate (an estimate needs "
                     f"+{margin:g} over the start and any simpler estimate)"
                     + (SAME_AS_SCALE if scale else ""))
    else:
        lines.append("kept the starting registration: no estimate converged"
                     + (SAME_AS_SCALE if scale else ""))
    return lines


def _image_pair(args: argparse.Namespace) -> tuple[str, np.ndarray, np.ndarray]:
    """(label, RGB, IR) of --images, or of --folder's --pair (the first pair by default)."""
    if args.images:
        rgb, ir = load_image_pair(*args.images)
        return " + ".join(Path(p).name for p in args.images), rgb, ir
    dataset = PairFolderDataset(args.folder)
    name = args.pair or dataset.names[0]
    if name not in dataset.names:
        raise CalibrationError(f"no pair '{name}' in {args.folder} ({len(dataset)} pairs, "
                               f"from {dataset.names[0]} to {dataset.names[-1]})")
    sample = dataset[dataset.names.index(name)]
    return f"{name} ({args.folder})", sample.rgb, sample.ir


def _check_option_use(args: argparse.Namespace) -> None:
    if not (args.points or args.camera_info or args.images or args.folder):
        raise CalibrationError("calibrate needs --points, --camera-info, --images or --folder")
    extrinsics = (args.translation, args.rpy, args.distance)
    if not args.camera_info and any(v is not None for v in extrinsics):
        raise CalibrationError("--translation, --rpy and --distance go with --camera-info")
    if args.ransac and not args.points:
        raise CalibrationError("--ransac goes with --points")
    if args.pair and not args.folder:
        raise CalibrationError("--pair goes with --folder")
    if args.iterations < 1:
        raise CalibrationError(f"--iterations must be at least 1, got {args.iterations}")
    if args.margin < 0:
        raise CalibrationError(f"--margin must be 0 or more (a worse estimate is never kept), "
                               f"got {args.margin}")


def _format_report(homography: np.ndarray, lines: list[str], out: Path) -> str:
    rows = [" ".join(f"{v:14.8g}" for v in row) for row in homography]
    return "\n".join(["IR -> RGB homography:", *(f"  [{row} ]" for row in rows), *lines,
                      f"wrote {out} (parameters: registration, homography)"])
