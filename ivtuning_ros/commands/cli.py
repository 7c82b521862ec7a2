"""The `ivtuning` command: info, convert, bench (more subcommands arrive with their issues).

Every failure the user can fix ends in one line on stderr and a non-zero exit,
never a traceback. Subcommands defined in modules of their own (`COMMAND_MODULES`) are
imported only when they run, so a command never needs another's dependencies: `ivtuning
bench` runs without rclpy, mcap or pycocotools, and a command that needs a missing package
says which in one line.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..hub.catalog import is_catalogue_name
from ..model import (
    ConfigError,
    IVTuningModel,
    ModelConfig,
    WeightsError,
    build_backbone,
    build_model,
    load_checkpoint,
    load_config,
    model_summary,
    parameter_summary,
    save_checkpoint,
)
from ..model.backbones.swin_weights import (
    detect_swin_layout,
    load_swin_state,
    to_torchvision_layout,
)
from ..model.heads.dino_weights import is_mmdet_detector, load_mmdet_dino
from ..model.weights import read_checkpoint
from ..runtime import EngineOptions
from ..runtime.backends import BACKENDS, BackendUnavailable
from ..runtime.backends.onnx_export import OPSET, export_key, export_onnx
from ..runtime.benchmark import (
    bench_backends,
    bench_engine,
    bench_model,
    device_name,
    parse_backend,
    synthetic_frames,
)
from ..runtime.step import IR_DTYPES, FrameLayout, FrameStep

EXIT_USAGE = 2
# Subcommand -> (module, function adding its parser); imported when that command runs.
COMMAND_MODULES = {
    "eval": ("ivtuning_ros.commands.eval", "add_eval_parser"),
    "train": ("ivtuning_ros.commands.train", "add_train_parser"),
    "compare": ("ivtuning_ros.commands.compare", "add_compare_parser"),
    "train-fusion": ("ivtuning_ros.commands.train_fusion", "add_train_fusion_parser"),
    "calibrate": ("ivtuning_ros.commands.calibrate", "add_calibrate_parser"),
    "replay": ("ivtuning_ros.commands.replay", "add_replay_parser"),
    "perceive": ("ivtuning_ros.commands.perceive", "add_perceive_parser"),
    "weights": ("ivtuning_ros.commands.weights", "add_weights_parser"),
}
# ROS 2 packages come from a distribution (or `make venv`), not from pip.
ROS_PACKAGES = {"ament_index_python", "builtin_interfaces", "diagnostic_msgs", "geometry_msgs",
                "lifecycle_msgs", "rcl_interfaces", "rclpy", "rosidl_runtime_py", "sensor_msgs",
                "std_msgs", "vision_msgs", "visualization_msgs"}
# Import name -> pip distribution, where they differ.
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml"}


class CommandUnavailable(RuntimeError):
    """A subcommand cannot run here: a package it needs is missing."""


def missing_package(command: str, exc: ImportError) -> str:
    """One line: what ``ivtuning command`` needs that did not import, and how to get it."""
    top = (exc.name or "").split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or not top:  # e.g. a name a version lacks
        return f"'ivtuning {command}' cannot import what it needs: {exc}"
    if top in ROS_PACKAGES:
        return (f"'ivtuning {command}' needs ROS 2's Python package '{top}', which does not "
                f"import here ({exc}): source a ROS 2 installation "
                "(source /opt/ros/<distro>/setup.bash) or run `make venv`")
    return (f"'ivtuning {command}' needs the Python package '{top}', which is not "
            f"installed ({exc}): pip install '{PIP_NAMES.get(top, top)}'")


def _is_ours(exc: ImportError) -> bool:
    """An import error inside this package is a bug to show, not a missing dependency."""
    return (exc.name or "").split(".")[0] == __name__.split(".")[0]


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model config YAML, e.g. models/ivt_swin_l.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set prompter.split_ratio=0.5")


def cmd_info(args: argparse.Namespace) -> int:
    """Print the parameter table of a model config."""
    config = load_config(args.config, args.overrides)
    with torch.device("meta"):  # counting needs shapes, not values: SAM-H builds instantly
        if config.detection or config.segmentation or config.sod:
            summary = model_summary(build_model(config, load_weights=False))
        else:
            summary = parameter_summary(build_backbone(config, load_weights=False))
    summary = {"config": config.name, **summary}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    frozen, trainable = summary["backbone_frozen_params"], summary["backbone_trainable_params"]
    backbone = config.backbone
    window = f", window {backbone.window_size}" if backbone.family == "swin" else ""
    print(f"{config.name}: {config.method} on {backbone.variant}, patch {backbone.patch_size}"
          f"{window}, IR channels {config.prompter.ir_in_channels}")
    print(f"{'module':<40}{'params':>14}  trainable")
    for row in summary["modules"]:
        print(f"{row['name']:<40}{row['params']:>14,}  {'yes' if row['trainable'] else 'no'}")
    print("-" * 65)
    print(f"{'frozen backbone params':<40}{frozen:>14,}")
    print(f"{'trainable backbone params (#TP)':<40}{trainable:>14,}  "
          f"({trainable / 1e6:.3f}M, {100 * trainable / frozen:.2f}% of the frozen backbone)")
    if "mp_alpha_params" in summary:
        print(f"{'  of which MP-alpha':<40}{summary['mp_alpha_params']:>14,}")
    if summary["reusable_frozen_params"]:
        print(f"{'reusable frozen params (modality file)':<40}"
              f"{summary['reusable_frozen_params']:>14,}")
    if "trainable_params" in summary:
        print(f"{'detection head':<40}{summary['detection_head_params']:>14,}")
        print(f"{'segmentation head':<40}{summary['segmentation_head_params']:>14,}")
        print(f"{'salient object detection head':<40}{summary['sod_head_params']:>14,}")
        print(f"{'trainable total':<40}{summary['trainable_params']:>14,}")
        print(f"{'adapter checkpoint':<40}{summary['adapter_checkpoint_mb']:>11.2f} MiB")
    else:
        print(f"{'output norms / pyramid (neck)':<40}{summary['neck_norm_params']:>14,}  "
              "trained with the heads, not in #TP")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert Swin weights to torchvision layout, or an mmdet DINO detector to a checkpoint."""
    destination = Path(args.output)
    if destination.exists() and not args.force:
        raise WeightsError(f"'{destination}' exists; pass --force to overwrite it")
    with tqdm(total=3, desc="convert", unit="step", disable=args.quiet) as progress:
        progress.set_postfix_str("reading")
        state = read_checkpoint(args.checkpoint)
        progress.update()
        if is_mmdet_detector(state):
            message = _convert_detector(state, args, destination, progress)
        else:
            message = _convert_swin(state, args, destination, progress)
    print(message)
    return 0


def _convert_swin(state: dict, args: argparse.Namespace, destination: Path,
                  progress: tqdm) -> str:
    layout = detect_swin_layout(state)
    progress.set_postfix_str(f"converting from {layout} layout")
    converted = to_torchvision_layout(state)
    if args.config:
        load_swin_state(build_backbone(load_config(args.config, args.overrides),
                                       load_weights=False), converted)
    progress.update()
    progress.set_postfix_str("writing")
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, destination)
    progress.update()
    return (f"converted {len(converted)} tensors from {layout} layout to torchvision layout: "
            f"{destination}")


def _convert_detector(state: dict, args: argparse.Namespace, destination: Path,
                      progress: tqdm) -> str:
    if not args.config:
        raise ConfigError("an mmdet DINO checkpoint needs --config: the model config it "
                          "converts into (e.g. models/ivt_swin_l_dino_m3fd.yaml)")
    config = load_config(args.config, args.overrides)
    model = build_model(config, load_weights=False)
    progress.set_postfix_str("converting from mmdet DINO layout")
    result = load_mmdet_dino(model, state)
    progress.update()
    progress.set_postfix_str("writing")
    save_checkpoint(model, config, destination)
    progress.update()
    for line in result.not_in_checkpoint:
        print(f"ivtuning convert: warning: not in the checkpoint: {line}", file=sys.stderr)
    return (f"converted {result.loaded} tensors of an mmdet DINO detector into a full "
            f"checkpoint for {config.name}: {destination} (IV-tuning parts start untrained: "
            "s3/s4 are zero)")


def cmd_export(args: argparse.Namespace) -> int:
    """An adapter (with its base) or a full checkpoint -> one full checkpoint file."""
    model, config = load_checkpoint(args.checkpoint, base_weights=args.base_weights)
    destination = Path(args.output)
    if args.onnx:
        return _export_onnx(model, config, args, destination)
    if destination.exists() and not args.force:
        raise WeightsError(f"'{destination}' exists; pass --force to overwrite it")
    save_checkpoint(model, config, destination, half=args.fp16)
    size = destination.stat().st_size / 2**20
    print(f"wrote {destination}: full {config.name} checkpoint, "
          f"{'fp16' if args.fp16 else 'fp32'}, {size:.1f} MiB")
    return 0


def _export_onnx(model: IVTuningModel, config: ModelConfig, args: argparse.Namespace,
                 destination: Path) -> int:
    """The engine's whole per-frame step for one frame layout -> ONNX."""
    layout = FrameLayout(tuple(args.rgb_size or (config.input.height, config.input.width)),
                         tuple(args.ir_size) if args.ir_size else None,
                         args.ir_dtype if args.ir_size else None, args.bgr)
    step = FrameStep(model.eval(), config, layout, args.max_detections, torch.device("cpu"),
                     gain_in_graph=not args.tensorrt)
    if destination.suffix != ".onnx":  # a cache folder: where the engine looks for it
        destination = destination / "onnx" / f"{export_key(step)}.onnx"
    if destination.exists() and not args.force:
        raise WeightsError(f"'{destination}' exists; pass --force to overwrite it")
    with tqdm(total=1, desc="export onnx", unit="model", disable=args.quiet) as progress:
        export_onnx(step, destination, source=str(args.checkpoint))
        progress.update()
    size = destination.stat().st_size / 2**20
    print(f"wrote {destination}: {config.name}, {layout.describe()}, opset {OPSET}, "
          f"{size:.1f} MiB")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Model components and engine variants: latency p50/p95/p99, throughput, memory."""
    overrides = list(args.overrides)
    if args.size:
        overrides += [f"input.height={args.size[0]}", f"input.width={args.size[1]}"]
    if args.checkpoint:
        model, config = load_checkpoint(args.checkpoint)
    else:
        config = load_config(args.config, overrides)
        model = build_model(config, load_weights=False)
    if args.backend:
        return _bench_backends(model, config, args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available; "
                         "use --device cpu")
    options = EngineOptions(device=args.device, precision=args.precision,
                            cuda_graphs=args.graphs == "on", channels_last=args.channels_last,
                            compile=args.compile, score_threshold=0.0)
    with tqdm(total=2 * (args.warmup + args.repeats), desc="bench", unit="step",
              disable=args.json) as progress:
        report = bench_model(model, config, device, args.repeats, args.warmup, progress.update)
        report["engine"] = bench_engine(model, config, options, args.repeats, args.warmup,
                                        progress.update)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['config']} at {report['input'][0]}x{report['input'][1]} on "
          f"{report['device']} ({report['repeats']} runs)")
    print(f"{'model component':<32}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for name, stats in report["latency_ms"].items():
        print(f"{name:<32}{stats['p50']:>10.1f}{stats['p95']:>10.1f}{stats['p99']:>10.1f}")
    print(f"prompter share of the backbone: {100 * report['prompter_share_of_backbone']:.1f}%")
    print(f"{'engine variant / stage':<32}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for name, entry in report["engine"].items():
        if not isinstance(entry, dict):
            print(f"{name}: {entry}")
            continue
        for stage, stats in entry["latency_ms"].items():
            print(f"{name + ' / ' + stage:<32}{stats['p50']:>10.1f}{stats['p95']:>10.1f}"
                  f"{stats['p99']:>10.1f}")
        print(f"{name + ' throughput':<32}{entry['throughput_fps']:>10.2f} fps")
    return 0


def _bench_backends(model: IVTuningModel, config: ModelConfig, args: argparse.Namespace) -> int:
    """`ivtuning bench --backend`: back-ends side by side, with parity against torch fp32."""
    for spec in args.backend:
        parse_backend(spec)
    scenes = synthetic_frames(config, args.scenes)
    with tqdm(total=args.warmup + args.repeats, desc="bench back-ends", unit="round",
              disable=args.json) as progress:
        backends = bench_backends(model, config, args.backend, scenes, args.repeats,
                                  args.warmup, args.score_threshold, device=args.device,
                                  progress=progress.update)
    report = {"config": config.name, "checkpoint": args.checkpoint or "",
              "input": [config.input.height, config.input.width],
              "device": device_name(torch.device(args.device)), "torch": torch.__version__,
              "scenes": len(scenes), "repeats": args.repeats,
              "score_threshold": args.score_threshold, "backends": backends}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{config.name} at {config.input.height}x{config.input.width} on {report['device']}, "
          f"{len(scenes)} synthetic scenes x {args.repeats}")
    print(f"{'back-end':<20}{'p50 ms':>10}{'p99 ms':>10}{'speed-up':>10}  parity vs torch fp32")
    for name, entry in backends.items():
        if isinstance(entry, dict):
            parity = ", ".join(f"{k} {v}" for k, v in entry["parity"].items())
            print(f"{name:<20}{entry['latency_ms']['p50']:>10.1f}{entry['latency_ms']['p99']:>10.1f}"
                  f"{entry['speedup_vs_torch_fp32']:>9.2f}x  {parity}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The real pipeline (synthetic cameras -> node -> recorder) on the embedded default."""
    from .demo import DEMO_CHECKPOINT, prepare_backend, run_demo  # imports rclpy

    checkpoint = args.checkpoint or (None if args.config else DEMO_CHECKPOINT)
    if checkpoint and not (Path(checkpoint).is_file() or is_catalogue_name(checkpoint)):
        checkpoint = None
    parameters = {"device": args.device, "cuda_graphs": args.device != "cpu",
                  "backend": args.backend, "precision": args.precision or "auto"}
    if checkpoint:
        parameters.update(checkpoint=str(checkpoint), score_threshold=0.3)
        if args.backend != "torch":
            seconds = prepare_backend(str(checkpoint), args.backend, args.precision)
            print(f"demo: {args.backend} ready in {seconds:.1f} s", file=sys.stderr)
    else:
        parameters.update(model_config=args.config or "ivt_swin_t_realtime.yaml",
                          score_threshold=0.0, max_detections=5)
        print("note: no trained demo weights were found, so the model is UNTRAINED: its "
              "detections and masks are noise; the demo shows the pipeline, not accuracy",
              file=sys.stderr)
    stats = run_demo(Path(args.out), args.frames, args.rate, parameters,
                     untrained=not checkpoint)
    print(f"demo: {stats['frames_published']} frames published, "
          f"{stats['frames_with_results']} with results, {stats['frames_fused']} of them fused "
          f"RGB + IR ({stats['weights']} {stats['model']}); "
          f"result age p50 {stats['result_age_ms']['p50']:.0f} ms, p99 "
          f"{stats['result_age_ms']['p99']:.0f} ms; "
          f"{stats['detections_per_frame']['mean']:.1f} detections per frame")
    print(f"wrote {', '.join(str(Path(args.out) / f) for f in stats['files'])}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``command`` (the first argument) decides which
    `COMMAND_MODULES` are imported (see `_add_module_commands`)."""
    parser = argparse.ArgumentParser(
        prog="ivtuning", description="IV-tuning RGB-infrared perception tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameter table of a model config")
    _add_config_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=cmd_info)

    convert = commands.add_parser(
        "convert", help="convert Swin weights (Microsoft/mmdet layout) to torchvision layout, "
                        "or an mmdet DINO detector checkpoint to a full ivtuning checkpoint")
    convert.add_argument("checkpoint", help="source checkpoint (.pth)")
    convert.add_argument("output", help="destination file")
    convert.add_argument("--config", help="model config: checks Swin weights against it; "
                                          "required for a DINO detector")
    convert.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE", help="override a value of --config")
    convert.add_argument("--force", action="store_true", help="overwrite the output file")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(run=cmd_convert)

    bench = commands.add_parser("bench", help="model and engine latency, side by side")
    bench.add_argument("--config", default="models/ivt_swin_t_realtime.yaml",
                       help="model config (default: the node's real-time model)")
    bench.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config value")
    bench.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    bench.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                       help="input size (default: the config's input.height/width)")
    bench.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                       help="engine precision (default: fp16 on CUDA, fp32 on CPU)")
    bench.add_argument("--graphs", choices=["on", "off"], default="on",
                       help="CUDA graphs for the engine (CUDA only)")
    bench.add_argument("--channels-last", action="store_true",
                       help="engine: channels-last memory format")
    bench.add_argument("--compile", action="store_true", help="engine: torch.compile the model")
    bench.add_argument("--repeats", type=int, default=10, help="timed runs (and frames)")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--checkpoint", help="trained checkpoint instead of --config's random "
                                            "weights (parity means most on trained weights)")
    bench.add_argument("--backend", nargs="+", metavar="BACKEND[:PRECISION]",
                       help="compare inference back-ends end to end instead, e.g. "
                            f"--backend openvino openvino:fp32 onnxruntime ({', '.join(BACKENDS)};"
                            " torch fp32 is always the reference)")
    bench.add_argument("--scenes", type=int, default=3,
                       help="synthetic scenes for --backend (day, night, fog in turn)")
    bench.add_argument("--score-threshold", type=float, default=0.3,
                       help="threshold for --backend's identical-detections check")
    bench.set_defaults(run=cmd_bench)
    export = commands.add_parser("export", help="adapter + base (or full) checkpoint -> one "
                                                 "full checkpoint, optionally fp16; or --onnx")
    export.add_argument("checkpoint", help="adapter or full checkpoint")
    export.add_argument("output", help="destination file")
    export.add_argument("--base-weights", help="frozen Swin weights under an adapter "
                                               "(default: the file the adapter names)")
    export.add_argument("--fp16", action="store_true", help="store tensors as fp16")
    export.add_argument("--force", action="store_true", help="overwrite the output file")
    export.add_argument("--onnx", action="store_true",
                        help="export the engine's whole per-frame step to ONNX for one frame "
                             "layout instead; output is a .onnx file, or a folder used as the "
                             "engine's cache_dir")
    export.add_argument("--rgb-size", type=int, nargs=2, metavar=("H", "W"),
                        help="--onnx: RGB frame size (default: the config's input size)")
    export.add_argument("--ir-size", type=int, nargs=2, metavar=("H", "W"),
                        help="--onnx: IR frame size (default: none, an RGB-only export)")
    export.add_argument("--ir-dtype", choices=list(IR_DTYPES), default="uint16",
                        help="--onnx: IR pixels: uint8 (mono8), uint16 (raw counts, default) "
                             "or float32 (temperature)")
    export.add_argument("--bgr", action="store_true", help="--onnx: BGR frames")
    export.add_argument("--max-detections", type=int, default=100,
                        help="--onnx: the most detections per frame")
    export.add_argument("--tensorrt", action="store_true",
                        help="--onnx: the TensorRT variant (IR gain control left outside)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(run=cmd_export)

    demo = commands.add_parser("demo", help="synthetic cameras -> perception node -> "
                                             "recorder over ROS 2, with GIF, contact sheet and "
                                             "stats")
    demo.add_argument("--out", default="out/demo", help="output folder")
    demo.add_argument("--frames", type=int, default=30,
                      help="synthetic frames to publish (a third each day, night, fog)")
    demo.add_argument("--rate", type=float, default=1.0, help="camera rate, Hz")
    demo.add_argument("--config", help="model config instead of the demo weights")
    demo.add_argument("--checkpoint", help="checkpoint instead of the demo weights")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    demo.add_argument("--backend", default="torch", choices=BACKENDS,
                      help="the node's inference back-end")
    demo.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                      help="the node's precision (default: the back-end's best)")
    demo.set_defaults(run=cmd_demo)

    _add_module_commands(commands, command)
    return parser


def _add_module_commands(commands: argparse._SubParsersAction, command: str | None) -> None:
    """The `COMMAND_MODULES` subcommands: ``command``'s own parser when it is one of them
    (`CommandUnavailable` if its module does not import), a placeholder for the others when
    ``command`` is any known command, and every one that imports otherwise (``ivtuning
    --help``, a misspelt command), the others listed as unavailable."""
    known = command in commands.choices or command in COMMAND_MODULES
    for name, (module, function) in COMMAND_MODULES.items():
        if known and name != command:
            commands.add_parser(name)  # never parsed: the command line chose another
            continue
        try:
            add_parser = getattr(importlib.import_module(module), function)
        except ImportError as exc:
            if _is_ours(exc):
                raise
            if name == command:
                raise CommandUnavailable(missing_package(name, exc)) from None
            needs = (exc.name or "").split(".")[0] or str(exc)
            commands.add_parser(name, help=f"(unavailable here: needs '{needs}')")
            continue
        add_parser(commands)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    try:
        parser = build_parser(command)
    except CommandUnavailable as exc:
        print(f"ivtuning {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, WeightsError, ValueError, OSError, BackendUnavailable) as exc:
        print(f"ivtuning {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:  # a command's own lazy import, e.g. `demo` needs rclpy
        if _is_ours(exc):
            raise
        print(f"ivtuning {args.command}: error: {missing_package(args.command, exc)}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
