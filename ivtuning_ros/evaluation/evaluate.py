"""Accuracy of an `Engine` on a dataset of `Sample`s: the run that fills the `metrics`
evaluators, its JSON report and its charts (`ivtuning eval`, `ivtuning compare`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from ..data import Sample
from ..runtime import Engine
from .metrics import UNDEFINED, DetectionEvaluator, SegmentationEvaluator


@dataclass
class Evaluation:
    """The filled evaluators of one run; None where the model or dataset lacks that task."""

    dataset: str
    model: str
    images: int
    detection: DetectionEvaluator | None
    segmentation: SegmentationEvaluator | None

    def report(self) -> dict:
        """JSON-able: dataset, model, images, detection and segmentation summaries (or None)."""
        return {"dataset": self.dataset, "model": self.model, "images": self.images,
                "detection": self.detection.summary() if self.detection else None,
                "segmentation": self.segmentation.summary() if self.segmentation else None}


def run_evaluation(engine: Engine, dataset: Sequence[Sample], limit: int | None = None,
                   progress: bool = True, ignore_index: int | None = None,
                   use_ir: bool = True) -> Evaluation:
    """Run the engine on the first ``limit`` samples (all if None) and fill the evaluators.

    The dataset is a sequence of `Sample` with ``name``, ``detection_classes`` and
    ``segmentation_classes`` (see `ivtuning_ros.data`). Detection is evaluated when
    the model detects and the dataset has boxes, segmentation when the model
    segments and the dataset has masks; the model's class ids must mean the
    dataset's (its class list starts with the dataset's, case-insensitive).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    det_names = _shared_classes("detection", engine.class_names, dataset.detection_classes)
    seg_names = _shared_classes("segmentation", engine.seg_class_names,
                                dataset.segmentation_classes)
    if det_names is None and seg_names is None:
        raise ValueError(f"nothing to evaluate: the model has detection classes "
                         f"{engine.class_names} and segmentation classes "
                         f"{engine.seg_class_names}, dataset {dataset.name} has ground truth "
                         f"for {list(dataset.detection_classes)} and "
                         f"{list(dataset.segmentation_classes)}")
    detection = DetectionEvaluator(det_names) if det_names else None
    segmentation = (SegmentationEvaluator(len(seg_names), ignore_index, seg_names)
                    if seg_names else None)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), desc="eval", unit="image", disable=not progress):
        sample = dataset[index]
        result = engine.infer(sample.rgb, sample.ir if use_ir else None, sample.homography)
        if detection is not None:
            found = result.detections
            detection.add(index, sample.boxes, sample.labels, found.boxes, found.scores,
                          found.labels)
        if segmentation is not None and sample.mask is not None:
            segmentation.add(sample.mask, result.class_map)
    return Evaluation(dataset.name, engine.config.name, count, detection, segmentation)


def evaluate(engine: Engine, dataset: Sequence[Sample], limit: int | None = None,
             progress: bool = True, ignore_index: int | None = None,
             use_ir: bool = True) -> dict:
    """`run_evaluation` and its JSON-able report (see `Evaluation.report`)."""
    return run_evaluation(engine, dataset, limit, progress, ignore_index, use_ir).report()


def plot_report(report: dict, out_dir: str | Path,
                detection: DetectionEvaluator | None = None) -> list[Path]:
    """PNG charts of a report: per-class AP, per-class IoU and, given the detection
    evaluator, precision-recall curves at IoU 0.5. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if report.get("detection"):
        written.append(_bar_chart(report["detection"]["per_class_AP"], "AP (IoU 0.50:0.95)",
                                  out_dir / "per_class_ap.png"))
    if report.get("segmentation"):
        written.append(_bar_chart(report["segmentation"]["per_class_IoU"], "IoU",
                                  out_dir / "per_class_iou.png"))
    curves = detection.precision_recall(0.5) if detection is not None else {}
    if curves:
        written.append(_pr_chart(curves, out_dir / "pr_curves_iou50.png"))
    return [path for path in written if path is not None]


def _shared_classes(task: str, model_names: Sequence[str],
                    dataset_names: Sequence[str]) -> list[str] | None:
    """The model's class names when both sides have the task, else None."""
    if not model_names or not dataset_names:
        return None
    if [name.lower() for name in model_names[:len(dataset_names)]] != \
            [name.lower() for name in dataset_names]:
        raise ValueError(f"the model's {task} classes {list(model_names)} do not start with "
                         f"the dataset's {list(dataset_names)}: their class ids differ")
    return list(model_names)


def _bar_chart(values: dict[str, float], ylabel: str, path: Path) -> Path | None:
    """Bars of the defined values (undefined classes are left out); None if none is."""
    defined = {name: value for name, value in values.items() if value != UNDEFINED}
    if not defined:
        return None
    figure = Figure(figsize=(2.0 + 0.8 * len(defined), 3.6), layout="tight")
    axes = figure.subplots()
    bars = axes.bar(list(defined), list(defined.values()), color="tab:blue")
    axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set(ylim=(0.0, 1.08), ylabel=ylabel, title=f"per-class {ylabel}")
    axes.tick_params(axis="x", labelrotation=30)
    return _save(figure, path)


def _pr_chart(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    figure = Figure(figsize=(5.0, 4.2), layout="tight")
    axes = figure.subplots()
    for name, (recall, precision) in curves.items():
        axes.plot(recall, precision, label=name)
    axes.set(xlim=(0.0, 1.0), ylim=(0.0, 1.02), xlabel="recall", ylabel="precision",
             title="precision-recall at IoU 0.5")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot state
    figure.savefig(path, dpi=100)
    return path
