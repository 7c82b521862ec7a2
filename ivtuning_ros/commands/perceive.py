"""`ivtuning perceive`: the node's whole perception on a folder of real RGB-IR pairs.

Each pair of the folder (`PairFolderDataset`, any size, 8- or 16-bit IR) runs through
the engine as the node runs a camera pair (IR scaled onto the RGB image); the node's
debug overlay (`draw_overlay`) and its M2PN fused image (`FusionRunner`, as
``~/fused/image``) are drawn from the result. Written under ``--out``:

* ``overlays/<name>.png`` and ``fused/<name>.png``, ``<name>`` the pair's relative path;
* ``detections.json``: the model, its training data, and per image the boxes (xyxy, RGB
  pixels), class names and scores;
* ``coco_results.json`` (COCO's results format: image_id, category_id, bbox xywh, score)
  and ``coco_images.json`` (its images and categories, no annotations: what
  ``COCO().loadRes`` needs, and the map from image ids to pair names);
* ``contact_sheet.png``: the first overlays, each at its own aspect ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data.pair_folder import PairFolderDataset
from ..data.sample import Sample
from ..model import IVTuningModel, ModelConfig, load_model
from ..model.checkpoint import synthetic_only, trained_on, training_data
from ..ros.overlay import draw_overlay
from ..ros.params import demo_weights, package_dir
from ..runtime import Engine, EngineOptions, Result
from ..runtime.image_fusion import FusionRunner

DEMO_CHECKPOINT, DEMO_FUSION = demo_weights()
OVERLAY_ALPHA = 0.45  # the node's default overlay_alpha (config/*.yaml)
SHEET_IMAGES = 6
SHEET_COLUMNS = 3
SHEET_HEIGHT = 240  # px of each contact-sheet row; widths follow each image's aspect


def add_perceive_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``perceive`` subcommand (its ``run`` is `run_perceive`)."""
    parser = subparsers.add_parser(
        "perceive", help="detections, masks and fused images for a folder of RGB-IR pairs")
    parser.add_argument("--root", required=True,
                        help="folder of pairs: an IR folder (cropinfrared, ir, infrared, "
                             "thermal, lwir, T) and a visible one (crop_LR_visible, vi, vis, "
                             "visible, rgb, RGB) with images of the same names")
    parser.add_argument("--split", default="",
                        help="sub-folder of both image folders to read, e.g. test for LLVIP "
                             "(default: the folders themselves)")
    parser.add_argument("--checkpoint",
                        help="trained checkpoint (default: the package's demo weights "
                             f"{DEMO_CHECKPOINT.name}, unless --config is given)")
    parser.add_argument("--config",
                        help="model config YAML (a path or a file name under the package's "
                             "models/); alone, the heads are untrained; with --checkpoint it "
                             "must name the checkpoint's model")
    parser.add_argument("--out", default="out/perceive", help="output folder "
                                                              "(default %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N pairs")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="lowest detection score kept, in [0, 1] (default %(default)s, "
                             "the node's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--fusion-checkpoint", default=str(DEMO_FUSION),
                        help="M2PN weights for the fused images (default: the package's "
                             f"{DEMO_FUSION.name}; 'none' for no fused images)")
    parser.set_defaults(run=run_perceive)
    return parser


def run_perceive(args: argparse.Namespace) -> int:
    """Perceive every pair (up to ``--limit``), write the files, print a summary."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must lie in [0, 1], got {args.score_threshold}")
    dataset = PairFolderDataset(args.root, args.split)
    model, config, trained = _load_model(args)
    _warn_about_weights(model, config, trained)
    engine = Engine(model, config, EngineOptions(device=args.device,
                                                 score_threshold=args.score_threshold))
    fusion = (None if args.fusion_checkpoint == "none"
              else FusionRunner(args.fusion_checkpoint, device=str(engine.device)))
    out = Path(args.out)
    count = min(len(dataset), args.limit or len(dataset))
    images, overlays = [], []
    for index in tqdm(range(count), desc="perceive", unit="pair"):
        sample = dataset[index]
        overlay = _perceive_pair(engine, fusion, sample, out, images)
        if len(overlays) < SHEET_IMAGES:
            overlays.append(overlay)
    _write_image(out / "contact_sheet.png", contact_sheet(overlays))
    checkpoint = _checkpoint(args)
    _write_results(out, images, engine.class_names, {
        "model": config.name, "checkpoint": str(checkpoint) if checkpoint else None,
        "weights_trained_on": training_data(trained_on(model)) if trained else "untrained",
        "root": str(Path(args.root)), "score_threshold": args.score_threshold})
    _print_summary(images, config.name, args, fused=fusion is not None)
    return 0


def _checkpoint(args: argparse.Namespace) -> str | Path | None:
    """The checkpoint `ivtuning demo` runs unless the user names another model."""
    return args.checkpoint or (None if args.config else DEMO_CHECKPOINT)


def _load_model(args: argparse.Namespace) -> tuple[IVTuningModel, ModelConfig, bool]:
    config = args.config
    if config and not Path(config).is_file() and (package_dir("models") / config).is_file():
        config = package_dir("models") / config
    return load_model(config, _checkpoint(args))


def _warn_about_weights(model: IVTuningModel, config: ModelConfig, trained: bool) -> None:
    if not trained:
        print(f"note: no --checkpoint, {config.name}'s heads are untrained: its detections "
              "are noise", file=sys.stderr)
    elif synthetic_only(trained_on(model)):
        print(f"warning: {config.name}'s weights were trained on synthetic scenes only: on "
              "real images expect few or no detections; train on real pairs for real use",
              file=sys.stderr)


def _perceive_pair(engine: Engine, fusion: FusionRunner | None, sample: Sample, out: Path,
                   images: list[dict]) -> np.ndarray:
    """Run one pair, write its overlay (and fused image), append its record to ``images``;
    returns the overlay."""
    result = engine.infer(sample.rgb, sample.ir)
    overlay = draw_overlay(sample.rgb, result.detections, engine.class_names,
                           result.color_map(), OVERLAY_ALPHA, show_mask=True, show_labels=True)
    _write_image(out / "overlays" / f"{sample.name}.png", overlay)
    if fusion is not None:
        registered = engine.register_ir(sample.ir, None, sample.rgb.shape)
        _write_image(out / "fused" / f"{sample.name}.png", fusion.fuse(sample.rgb, registered))
    height, width = sample.rgb.shape[:2]
    images.append({"name": sample.name, "width": width, "height": height,
                   "detections": _detections(result, engine.class_names)})
    return overlay


def _detections(result: Result, class_names: list[str]) -> list[dict]:
    found = result.detections
    if found is None:  # a segmentation-only model
        return []
    return [{"class": class_names[label] if label < len(class_names) else str(label),
             "label": int(label), "score": round(float(score), 4),
             "box_xyxy": [round(float(v), 2) for v in box]}
            for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True)]


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write image '{path}'")


def _write_results(out: Path, images: list[dict], class_names: list[str], header: dict) -> None:
    """detections.json, and the COCO pair: results, and the images and categories they
    refer to (image ids 1.., category ids label + 1, as `ivtuning eval` counts them)."""
    (out / "detections.json").write_text(json.dumps(
        {**header, "classes": class_names, "images": images}, indent=2) + "\n")
    results = [{"image_id": image_id, "category_id": d["label"] + 1,
                "bbox": _xywh(d["box_xyxy"]), "score": d["score"]}
               for image_id, image in enumerate(images, 1) for d in image["detections"]]
    (out / "coco_results.json").write_text(json.dumps(results) + "\n")
    coco_images = {
        "images": [{"id": image_id, "file_name": image["name"], "width": image["width"],
                    "height": image["height"]} for image_id, image in enumerate(images, 1)],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(class_names)],
        "annotations": []}
    (out / "coco_images.json").write_text(json.dumps(coco_images, indent=2) + "\n")


def _xywh(box: list[float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)]


def contact_sheet(images: list[np.ndarray], columns: int = SHEET_COLUMNS,
                  height: int = SHEET_HEIGHT) -> np.ndarray:
    """RGB images in rows of ``columns``, each scaled to ``height`` with its aspect ratio
    kept; rows are padded with black to the widest."""
    cells = [cv2.resize(image, (max(1, round(image.shape[1] * height / image.shape[0])),
                                height), interpolation=cv2.INTER_AREA) for image in images]
    rows = [np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    width = max(row.shape[1] for row in rows)
    return np.vstack([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)))
                      for row in rows])


def _print_summary(images: list[dict], model_name: str, args: argparse.Namespace,
                   fused: bool) -> None:
    classes = Counter(d["class"] for image in images for d in image["detections"])
    per_class = ", ".join(f"{name} {n}" for name, n in classes.most_common())
    print(f"perceive: {len(images)} pairs from {args.root} with {model_name} (score >= "
          f"{args.score_threshold:g}): {sum(classes.values())} detections"
          + (f" ({per_class})" if per_class else ""))
    out = Path(args.out)
    written = [f"{len(images)} overlays in {out / 'overlays'}"]
    if fused:
        written.append(f"{len(images)} fused images in {out / 'fused'}")
    print(f"wrote {', '.join(written)}, {out / 'detections.json'}, coco_results.json, "
          "coco_images.json, contact_sheet.png")
