"""The `ivtuning` command: info, convert (more subcommands arrive with their issues).

Every failure the user can fix ends in one line on stderr and a non-zero exit,
never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .model import ConfigError, WeightsError, build_backbone, load_config, parameter_summary
from .model.weights import (
    detect_swin_layout,
    load_swin_state,
    read_checkpoint,
    to_torchvision_layout,
)

EXIT_USAGE = 2


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model config YAML, e.g. models/ivt_swin_l.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set prompter.split_ratio=0.5")


def cmd_info(args: argparse.Namespace) -> int:
    """Print the parameter table of a model config."""
    config = load_config(args.config, args.overrides)
    summary = parameter_summary(build_backbone(config, load_weights=False))
    summary = {"config": config.name, **summary}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    frozen, trainable = summary["backbone_frozen_params"], summary["backbone_trainable_params"]
    print(f"{config.name}: {config.backbone.variant}, window {config.backbone.window_size}, "
          f"IR channels {config.prompter.ir_in_channels}")
    print(f"{'module':<34}{'params':>14}  trainable")
    for row in summary["modules"]:
        print(f"{row['name']:<34}{row['params']:>14,}  {'yes' if row['trainable'] else 'no'}")
    print("-" * 59)
    print(f"{'frozen backbone params':<34}{frozen:>14,}")
    print(f"{'trainable backbone params (#TP)':<34}{trainable:>14,}  "
          f"({trainable / 1e6:.3f}M, {100 * trainable / frozen:.2f}% of the frozen backbone)")
    print(f"{'  of which MP-alpha':<34}{summary['mp_alpha_params']:>14,}")
    print(f"{'stage output norms (neck)':<34}{summary['neck_norm_params']:>14,}  "
          "trained with the heads, not in #TP")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a Microsoft or mmdet Swin checkpoint to torchvision layout."""
    destination = Path(args.output)
    if destination.exists() and not args.force:
        raise WeightsError(f"'{destination}' exists; pass --force to overwrite it")
    with tqdm(total=4, desc="convert", unit="step", disable=args.quiet) as progress:
        progress.set_postfix_str("reading")
        state = read_checkpoint(args.checkpoint)
        progress.update()
        layout = detect_swin_layout(state)
        progress.set_postfix_str(f"converting from {layout} layout")
        converted = to_torchvision_layout(state)
        progress.update()
        if args.config:
            progress.set_postfix_str("checking against the config")
            config = load_config(args.config, args.overrides)
            load_swin_state(build_backbone(config, load_weights=False), converted)
        progress.update()
        progress.set_postfix_str("writing")
        destination.parent.mkdir(parents=True, exist_ok=True)
        torch.save(converted, destination)
        progress.update()
    print(f"converted {len(converted)} tensors from {layout} layout to torchvision layout: "
          f"{destination}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivtuning", description="IV-tuning RGB-infrared perception tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameter table of a model config")
    _add_config_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=cmd_info)

    convert = commands.add_parser(
        "convert", help="convert Swin weights (Microsoft or mmdet layout) to torchvision layout"
    )
    convert.add_argument("checkpoint", help="source checkpoint (.pth)")
    convert.add_argument("output", help="destination file (torchvision-layout state dict)")
    convert.add_argument("--config", help="check that the result loads into this model config")
    convert.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE", help="override a value of --config")
    convert.add_argument("--force", action="store_true", help="overwrite the output file")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(run=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, WeightsError, ValueError, OSError) as exc:
        print(f"ivtuning {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
