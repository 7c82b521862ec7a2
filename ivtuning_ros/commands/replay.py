"""`ivtuning replay`: an RGB + IR rosbag2 MCAP into the perception node at the recorded rate
(`ros.replay`), or processed offline into a new MCAP (`ros.offline`)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rclpy  # noqa: F401  (before mcap: where neither imports, the command names ROS 2)
import torch

from ..model import load_model
from ..ros.bag import IR_TOPIC, RGB_TOPIC
from ..ros.offline import process_offline
from ..ros.params import NODE_NAME, default_values, package_dir
from ..ros.replay import replay_into_node
from ..runtime import Engine, EngineOptions
from ..runtime.calibration import homography_from_params
from ..runtime.image_fusion import FusionRunner
from ..runtime.tracking import Tracker


def add_replay_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``replay`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "replay", help="replay an RGB + IR rosbag2 MCAP into the node, or process it offline",
        description="Publish a bag's RGB and IR images to the perception node at the "
                    "recorded rate (the node runs elsewhere, or --in-process), or with "
                    "--offline run the model without ROS communication and write a new MCAP "
                    "with the inputs, detections, segmentation masks and (with "
                    "--fusion-checkpoint) fused images.")
    parser.add_argument("bag", help="an .mcap file or a rosbag2 folder of them")
    parser.add_argument("--rgb-topic", default=RGB_TOPIC, help=f"default {RGB_TOPIC}")
    parser.add_argument("--ir-topic", default=IR_TOPIC, help=f"default {IR_TOPIC}")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="replay speed factor (default 1.0)")
    pace.add_argument("--fast", action="store_true", help="publish without pauses")
    parser.add_argument("--node-name", default=NODE_NAME,
                        help=f"the perception node's name (default {NODE_NAME})")
    parser.add_argument("--in-process", action="store_true",
                        help="start the perception node in this process (reliable input QoS)")
    parser.add_argument("--offline", action="store_true",
                        help="no DDS: run the model here and write --out")
    parser.add_argument("--out", help="--offline: output MCAP (default "
                                      "out/<bag name>_perception.mcap)")
    parser.add_argument("--force", action="store_true", help="--offline: overwrite --out")
    parser.add_argument("--config", default="ivt_swin_t_realtime.yaml",
                        help="--offline/--in-process: model config, a file or a name under "
                             "models/ (default ivt_swin_t_realtime.yaml)")
    parser.add_argument("--checkpoint", default="",
                        help="--offline/--in-process: full or adapter checkpoint (default: "
                             "untrained)")
    parser.add_argument("--base-weights", default="",
                        help="frozen Swin weights under an adapter checkpoint")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, "
                                                         "cuda or cuda:N")
    parser.add_argument("--calibration", metavar="FILE",
                        help="--offline/--in-process: parameters YAML with the IR -> RGB "
                             "homography (as `ivtuning calibrate` writes); default: scaling")
    parser.add_argument("--fusion-checkpoint", default="",
                        help="--offline/--in-process: M2PN checkpoint (a file or a name under "
                             "models/, e.g. m2pn_demo.pth): also write/publish the fused image")
    parser.add_argument("--fusion-width", type=int, default=320,
                        help="width M2PN runs at, px (default 320; output at the RGB size)")
    parser.add_argument("--no-tracking", action="store_true",
                        help="--offline: detections without track ids (the node's tracking "
                             "parameter false)")
    parser.add_argument("--slop", type=float, default=0.02,
                        help="--offline: largest RGB-IR stamp difference of a pair, s")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_replay_command)
    return parser


def run_replay_command(args: argparse.Namespace) -> int:
    """Run ``replay``: live into a node, or offline; print one summary line."""
    if args.offline:
        return _run_offline(args)
    if args.out or args.force:
        raise ValueError("--out and --force go with --offline")
    rate = None if args.fast else (1.0 if args.rate is None else args.rate)
    parameters = _node_parameters(args) if args.in_process else None
    counts = replay_into_node(args.bag, args.rgb_topic, args.ir_topic, rate, args.node_name,
                              args.in_process, parameters, progress=not args.quiet)
    print(f"replayed {counts['rgb']} RGB + {counts['ir']} IR messages from {args.bag} into "
          f"/{args.node_name} ({'as fast as possible' if rate is None else f'rate {rate:g}'}); "
          f"the node answered with {counts['detections']} detections messages")
    return 0


def _run_offline(args: argparse.Namespace) -> int:
    if args.rate is not None or args.fast or args.in_process:
        raise ValueError("--rate, --fast and --in-process go with live replay, not --offline")
    out = Path(args.out or f"out/{Path(args.bag).stem}_perception.mcap")
    if out.exists() and not args.force:
        raise ValueError(f"'{out}' exists; pass --force to overwrite it")
    threshold = default_values()["score_threshold"]
    tracker = None if args.no_tracking else Tracker(score_threshold=threshold)
    engine = _offline_engine(args, threshold if tracker is None else Tracker.low_score(threshold))
    fusion = None
    if args.fusion_checkpoint:
        fusion = FusionRunner(_model_file(args.fusion_checkpoint), args.fusion_width,
                              str(engine.device))
    homography = _calibration(args)
    counts = process_offline(args.bag, out, engine, args.rgb_topic, args.ir_topic, args.slop,
                             homography, args.node_name, progress=not args.quiet,
                             fusion=fusion, tracker=tracker)
    fused_images = f" and {counts['fused_images']} fused images" if fusion else ""
    print(f"processed {counts['fused'] + counts['rgb_only']} RGB frames of {args.bag} "
          f"({counts['fused']} fused with IR, {counts['rgb_only']} RGB-only, "
          f"{counts['bad_rgb'] + counts['bad_ir']} unusable images): wrote {out} with "
          f"{counts['detections']} detections, {counts['masks']} masks{fused_images}")
    return 0


def _offline_engine(args: argparse.Namespace, score_threshold: float) -> Engine:
    """An engine of the model the node would load from the same options."""
    path = _model_file(args.config)
    model, config, trained = load_model(None if args.checkpoint else path,
                                        args.checkpoint or None,
                                        base_weights=args.base_weights or None)
    if not trained:
        print(f"no --checkpoint: {config.name} runs with untrained heads and prompter")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Engine(model, config, EngineOptions(device=device, score_threshold=score_threshold))


def _model_file(name: str) -> Path:
    """A file, or a name under the package's models/."""
    path = Path(name)
    return path if path.is_file() else package_dir("models") / name


def _calibration(args: argparse.Namespace) -> np.ndarray | None:
    return homography_from_params(args.calibration, args.node_name) if args.calibration \
        else None


def _node_parameters(args: argparse.Namespace) -> dict:
    parameters = {"model_config": args.config, "checkpoint": args.checkpoint,
                  "base_weights": args.base_weights, "device": args.device,
                  "fusion_checkpoint": args.fusion_checkpoint,
                  "fusion_width": args.fusion_width}
    homography = _calibration(args)
    if homography is not None:
        parameters.update(registration="homography",
                          homography=[float(v) for v in homography.reshape(-1)])
    return parameters
