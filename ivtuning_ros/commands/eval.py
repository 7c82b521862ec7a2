"""The `ivtuning eval` subcommand: a model on a dataset -> report.json, plots, a summary.

Wire it in with ``add_eval_parser(commands)`` in the CLI's parser; ``main`` runs
``args.run(args)`` and turns ValueError/OSError into one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..data.datasets import add_dataset_arguments, dataset_from_arguments
from ..evaluation.evaluate import plot_report, run_evaluation
from ..evaluation.metrics import UNDEFINED
from ..evaluation.sod import contact_sheet as sod_contact_sheet
from ..evaluation.sod import evaluate_sod
from ..evaluation.tracking import evaluate_tracking, markdown_table, tracking_strip
from ..image_fusion.evaluate import contact_sheet, evaluate_fusion, markdown_tables
from ..image_fusion.pairs import held_out_indices
from ..model import load_config, load_model
from ..model.image_fusion.checkpoint import load_fusion
from ..ros.params import default_values, demo_weights, package_dir
from ..runtime import Engine, EngineOptions
from ..runtime.tracking import Tracker

DEMO_DETECTOR, DEMO_FUSION = demo_weights()
AP_SCORE_THRESHOLD = 0.001  # COCO AP wants nearly all detections


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand (its ``run`` is `run_eval_command`)."""
    parser = subparsers.add_parser("eval", help="COCO mAP / mIoU of a model on a dataset")
    parser.add_argument("--config", help="model config YAML; without --checkpoint the heads "
                                         "are untrained")
    parser.add_argument("--checkpoint", help="full or adapter checkpoint: the model and its "
                                             "stored config (--config, if given, must name "
                                             "the same model)")
    add_dataset_arguments(parser, default_length=100, default_split="test")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    parser.add_argument("--rgb-only", action="store_true",
                        help="run the model without IR (the visible baseline of the weights)")
    parser.add_argument("--ignore-index", type=int, metavar="ID",
                        help="segmentation class id left out of the metrics (default: none)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--score-threshold", type=float,
                        help="lowest detection score kept; COCO AP wants nearly all "
                             f"(default: {AP_SCORE_THRESHOLD}; with --tracking the node's "
                             "default, as the tracker sees what the node publishes)")
    parser.add_argument("--out", default="out/eval", help="folder for report.json and plots")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--fusion", action="store_true",
                        help="evaluate image fusion instead: M2PN (--fusion-checkpoint) and "
                             "the average, max-absolute and Laplacian-pyramid baselines, ten "
                             "metrics, and a contact sheet; --config sets the preprocessing "
                             "(default models/ivt_demo.yaml)")
    parser.add_argument("--fusion-checkpoint", default=str(DEMO_FUSION),
                        help="M2PN checkpoint for --fusion (default %(default)s; 'none' for "
                             "the baselines alone)")
    parser.add_argument("--fusion-width", type=int, metavar="PX",
                        help="--fusion: resize each pair to this width first (aspect kept); "
                             "default: each pair at its own resolution, as published tables "
                             "measure")
    parser.add_argument("--val-pairs", type=int, metavar="N",
                        help="--fusion: only the N validation pairs `ivtuning train-fusion "
                             "--val-pairs N --seed S` held out (same data, N, and --val-seed S)")
    parser.add_argument("--val-seed", type=int, default=0, metavar="S",
                        help="--fusion: seed of the --val-pairs draw, train-fusion's --seed "
                             "(default: 0)")
    _add_tracking_arguments(parser)
    parser.add_argument("--sod", action="store_true",
                        help="evaluate salient object detection instead: the model's saliency "
                             "on --data vt (VT821 / VT1000 / VT5000) or synthetic; S-measure, "
                             "weighted F-measure, E-measure (mean, max), MAE by pysodmetrics, "
                             "sod_report.json and sod_contact_sheet.png")
    parser.set_defaults(run=run_eval_command)
    return parser


def _add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking", action="store_true",
                        help="evaluate tracked detections instead: the model and the node's "
                             "tracker on synthetic sequences with ground-truth identities "
                             "(--data synthetic; day, night, fog; with IR and RGB-only): MOTA, "
                             "IDF1, HOTA; default model: the demo weights")
    parser.add_argument("--sequences", type=int, default=2, metavar="N",
                        help="--tracking: sequences per condition (default: 2)")
    parser.add_argument("--frames", type=int, default=40, metavar="N",
                        help="--tracking: camera frames per sequence at 10 Hz, before the "
                             "dropped ones (default: 40)")
    parser.add_argument("--sequence-seed", type=int, default=1000, metavar="S",
                        help="--tracking: seed of the first sequence (default: 1000)")
    parser.add_argument("--strip", metavar="PNG",
                        help="--tracking: also draw a strip of night frames with track ids")
    parser.add_argument("--bags", metavar="DIR",
                        help="--tracking: also write each sequence as an MCAP bag (RGB and IR "
                             "topics) for `ivtuning replay`")


def run_eval_command(args: argparse.Namespace) -> int:
    """Evaluate, write ``report.json`` and the plots into ``--out``, print a summary."""
    if args.fusion:
        return _run_fusion_eval(args)
    if args.tracking:
        return _run_tracking_eval(args)
    if args.sod:
        return _run_sod_eval(args)
    model, config, trained = load_model(args.config, args.checkpoint)
    if not trained:
        print("note: no --checkpoint, the model's heads are untrained", file=sys.stderr)
    dataset = dataset_from_arguments(args)
    threshold = AP_SCORE_THRESHOLD if args.score_threshold is None else args.score_threshold
    engine = Engine(model, config, EngineOptions(device=args.device, score_threshold=threshold,
                                                 max_detections=100))
    evaluation = run_evaluation(engine, dataset, args.limit, progress=not args.json,
                                ignore_index=args.ignore_index, use_ir=not args.rgb_only)
    report = evaluation.report()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plots = plot_report(report, out, evaluation.detection)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
        print(f"wrote {out / 'report.json'}" + "".join(f", {path.name}" for path in plots))
    return 0


def _run_fusion_eval(args: argparse.Namespace) -> int:
    config = load_config(args.config or package_dir("models") / "ivt_demo.yaml")
    model = None if args.fusion_checkpoint == "none" else load_fusion(args.fusion_checkpoint)
    dataset = dataset_from_arguments(args)
    indices = (held_out_indices(len(dataset), args.val_pairs, args.val_seed)
               if args.val_pairs else list(range(len(dataset))))
    report, examples = evaluate_fusion(model, config.input, dataset, indices[:args.limit],
                                       args.fusion_width, progress=not args.json)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = markdown_tables(report)
    (out / "fusion_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "fusion_report.md").write_text(tables + "\n")
    contact_sheet(examples, out / "fusion_contact_sheet.png")
    print(json.dumps(report, indent=2) if args.json else tables)
    print(f"wrote {out / 'fusion_report.json'}, fusion_report.md, fusion_contact_sheet.png",
          file=sys.stderr)
    return 0


def _run_tracking_eval(args: argparse.Namespace) -> int:
    if args.data != "synthetic":
        raise ValueError("--tracking measures on synthetic sequences with ground-truth "
                         "identities: pass --data synthetic (--conditions picks them)")
    checkpoint = args.checkpoint or (None if args.config else str(DEMO_DETECTOR))
    model, config, _ = load_model(args.config, checkpoint)
    threshold = args.score_threshold
    if threshold is None:
        threshold = default_values()["score_threshold"]
    # As in the node: the engine keeps the scores the tracker's second stage uses.
    engine = Engine(model, config, EngineOptions(
        device=args.device, score_threshold=Tracker.low_score(threshold), max_detections=100))
    seeds = range(args.sequence_seed, args.sequence_seed + args.sequences)
    conditions = tuple(dict.fromkeys(args.conditions.split(",")))
    report = evaluate_tracking(engine, conditions, seeds, args.frames,
                               Tracker(score_threshold=threshold),
                               progress=not args.json)
    report.update(model=config.name, checkpoint=checkpoint or "", score_threshold=threshold)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking_report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report)
    (out / "tracking_report.md").write_text(table + "\n")
    if args.strip:
        tracking_strip(engine, Tracker(score_threshold=threshold), args.sequence_seed,
                       args.frames, args.strip)
    if args.bags:
        from ..ros.sequence_bag import write_sequence_bags

        write_sequence_bags(Path(args.bags), conditions, seeds, args.frames)
    print(json.dumps(report, indent=2) if args.json else table)
    print(f"tracker {report['tracker_ms_p50']:.2f} ms per frame, "
          f"{100 * report['tracker_share_of_model']:.2f}% of the model's "
          f"{report['model_ms_p50']:.0f} ms; wrote {out / 'tracking_report.json'}, "
          "tracking_report.md", file=sys.stderr)
    return 0


def _run_sod_eval(args: argparse.Namespace) -> int:
    model, config, trained = load_model(args.config, args.checkpoint)
    if not trained:
        print("note: no --checkpoint, the model's heads are untrained", file=sys.stderr)
    # The saliency does not depend on the other heads: leave them out (DINO is most of the
    # demo model's time).
    model.detection = model.segmentation = None
    config = dataclasses.replace(config, detection=None, segmentation=None)
    engine = Engine(model, config, EngineOptions(device=args.device))
    report, examples = evaluate_sod(engine, dataset_from_arguments(args), args.limit,
                                    use_ir=not args.rgb_only, progress=not args.json)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sod_report.json").write_text(json.dumps(report, indent=2) + "\n")
    sod_contact_sheet(examples, out / "sod_contact_sheet.png")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['model']} on {report['dataset']} ({report['input']}): "
              f"{report['images']} images")
        for key, values in report["metrics"].items():
            print(f"  {key:<6} S-measure {values['S_measure']:.3f}  weighted F "
                  f"{values['weighted_F_measure']:.3f}  E-measure mean "
                  f"{values['E_measure_mean']:.3f} max {values['E_measure_max']:.3f}  MAE "
                  f"{values['MAE']:.3f}")
        print(f"wrote {out / 'sod_report.json'}, sod_contact_sheet.png")
    return 0


def _print_summary(report: dict) -> None:
    print(f"{report['model']} on {report['dataset']}: {report['images']} images")
    detection, segmentation = report["detection"], report["segmentation"]
    if detection:
        print(f"detection     mAP {_fmt(detection['mAP'])}  mAP50 {_fmt(detection['mAP50'])}  "
              f"mAP75 {_fmt(detection['mAP75'])}")
        for name, value in detection["per_class_AP"].items():
            print(f"  {name:<14}AP {_fmt(value)}")
    if segmentation:
        print(f"segmentation  mIoU {_fmt(segmentation['mIoU'])}  mAcc "
              f"{_fmt(segmentation['mAcc'])}  pixel accuracy "
              f"{_fmt(segmentation['pixel_accuracy'])}")
        for name, value in segmentation["per_class_IoU"].items():
            print(f"  {name:<14}IoU {_fmt(value)}  Acc "
                  f"{_fmt(segmentation['per_class_Acc'][name])}")


def _fmt(value: float) -> str:
    return "  n/a" if value == UNDEFINED else f"{value:.3f}"
