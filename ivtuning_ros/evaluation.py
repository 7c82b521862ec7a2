"""Accuracy of an `Engine` on a dataset of `Sample`s: COCO box AP and segmentation IoU.

Detection uses pycocotools (AP over IoU 0.50:0.95, 101 recall points, up to 100
detections per image, all areas); segmentation accumulates one confusion matrix
over all pixels. In every result -1.0 means undefined: there was nothing to
measure (no ground truth for that class, or none at all).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from .data import Sample
from .runtime import Engine

UNDEFINED = -1.0


class DetectionEvaluator:
    """COCO box AP of predictions against ground truth, added one image at a time.

    Boxes are xyxy pixels (N, 4); labels index ``class_names``. `summary` gives -1.0
    for a class without ground truth (left out of mAP) and for everything when no
    image has ground truth; with ground truth but no predictions every AP is 0.0.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.image_ids: dict[Hashable, int] = {}
        self.ground_truth: list[dict] = []
        self.predictions: list[dict] = []
        self._evaluated: COCOeval | None = None

    def add(self, sample_id: Hashable, gt_boxes: np.ndarray, gt_labels: np.ndarray,
            pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_labels: np.ndarray) -> None:
        """One image: ground truth (N, 4) + (N,), predictions (M, 4) + scores + labels (M,)."""
        if sample_id in self.image_ids:
            raise ValueError(f"sample '{sample_id}' was already added")
        image_id = self.image_ids[sample_id] = len(self.image_ids) + 1  # COCO ids start at 1
        for box, label in zip(*self._checked(gt_boxes, gt_labels, "ground truth"), strict=True):
            self.ground_truth.append({"id": len(self.ground_truth) + 1, "image_id": image_id,
                                      "category_id": label + 1, "bbox": box,
                                      "area": box[2] * box[3], "iscrowd": 0})
        boxes, labels = self._checked(pred_boxes, pred_labels, "prediction")
        for box, label, score in zip(boxes, labels, np.asarray(pred_scores).tolist(),
                                     strict=True):
            self.predictions.append({"image_id": image_id, "category_id": label + 1,
                                     "bbox": box, "score": score})
        self._evaluated = None

    def summary(self) -> dict:
        """mAP (IoU 0.50:0.95), mAP50, mAP75, per_class_AP {name: AP}, and counts."""
        counts = {"images": len(self.image_ids), "ground_truth_boxes": len(self.ground_truth),
                  "predictions": len(self.predictions)}
        evaluated = self._evaluate()
        if evaluated is None:
            value = 0.0 if self.ground_truth else UNDEFINED
            present = {ann["category_id"] - 1 for ann in self.ground_truth}
            per_class = {name: value if k in present else UNDEFINED
                         for k, name in enumerate(self.class_names)}
            return {"mAP": value, "mAP50": value, "mAP75": value, "per_class_AP": per_class,
                    **counts}
        precision = evaluated.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, class)
        per_class = {name: _defined_mean(precision[:, :, k])
                     for k, name in enumerate(self.class_names)}
        mean_ap, ap50, ap75 = (float(value) for value in evaluated.stats[:3])
        return {"mAP": mean_ap, "mAP50": ap50, "mAP75": ap75, "per_class_AP": per_class,
                **counts}

    def precision_recall(self, iou: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{class name: (recall (101,), precision (101,))} at one COCO IoU threshold, for the
        classes with ground truth; precision is 0 beyond the highest recall reached."""
        thresholds = np.linspace(0.5, 0.95, 10)
        index = np.flatnonzero(np.isclose(thresholds, iou))
        if not index.size:
            raise ValueError(f"iou must be a COCO threshold (0.50, 0.55, ..., 0.95), got {iou}")
        recall = np.linspace(0.0, 1.0, 101)
        present = sorted({ann["category_id"] - 1 for ann in self.ground_truth})
        evaluated = self._evaluate()
        return {self.class_names[k]: (recall, np.zeros_like(recall) if evaluated is None
                                      else evaluated.eval["precision"][index[0], :, k, 0, -1])
                for k in present}

    def _checked(self, boxes: np.ndarray, labels: np.ndarray,
                 what: str) -> tuple[list[list[float]], list[int]]:
        """xyxy (N, 4) + labels -> COCO xywh lists + ints, or ValueError."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        labels = np.asarray(labels, np.int64).reshape(-1)
        if len(boxes) != len(labels):
            raise ValueError(f"{what}: {len(boxes)} boxes but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"{what} labels must lie in 0..{len(self.class_names) - 1}, got "
                             f"{sorted(set(labels.tolist()))}")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        return xywh.tolist(), labels.tolist()

    def _evaluate(self) -> COCOeval | None:
        """The accumulated COCOeval (cached), or None without ground truth or predictions."""
        if not self.ground_truth or not self.predictions:
            return None
        if self._evaluated is None:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                truth = COCO()
                truth.dataset = {
                    "images": [{"id": image_id} for image_id in self.image_ids.values()],
                    "annotations": self.ground_truth,
                    "categories": [{"id": k + 1, "name": name}
                                   for k, name in enumerate(self.class_names)]}
                truth.createIndex()
                # loadRes writes into the dicts it gets: give it copies.
                predicted = truth.loadRes([dict(p) for p in self.predictions])
                evaluated = COCOeval(truth, predicted, "bbox")
                evaluated.evaluate()
                evaluated.accumulate()
                evaluated.summarize()
            self._evaluated = evaluated
        return self._evaluated


class SegmentationEvaluator:
    """Per-pixel confusion matrix (rows: ground truth, columns: prediction) over images.

    Pixels whose ground truth is ``ignore_index`` are skipped; a class id
    ``ignore_index`` is also left out of the per-class results and the means.
    A class absent from both ground truth and prediction has IoU -1.0 and one
    without ground-truth pixels accuracy -1.0; the means leave them out.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names or [str(k) for k in range(num_classes)])
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def add(self, gt_mask: np.ndarray, pred_mask: np.ndarray) -> None:
        """One image: ground truth and predicted class ids, both (H, W)."""
        if gt_mask.shape != pred_mask.shape:
            raise ValueError(f"ground truth {gt_mask.shape} and prediction {pred_mask.shape} "
                             "masks differ in shape")
        gt = gt_mask.ravel().astype(np.int64)
        pred = pred_mask.ravel().astype(np.int64)
        if self.ignore_index is not None:
            keep = gt != self.ignore_index
            gt, pred = gt[keep], pred[keep]
        if gt.size and (min(gt.min(), pred.min()) < 0
                        or max(gt.max(), pred.max()) >= self.num_classes):
            raise ValueError(f"class ids must lie in 0..{self.num_classes - 1} (ignore index "
                             f"{self.ignore_index})")
        k = self.num_classes
        self.confusion += np.bincount(k * gt + pred, minlength=k * k).reshape(k, k)

    def summary(self) -> dict:
        """mIoU, mAcc, pixel_accuracy, per_class_IoU and per_class_Acc {name: value}, pixels."""
        hits = np.diag(self.confusion).astype(np.float64)
        truth, predicted = self.confusion.sum(1), self.confusion.sum(0)
        union = truth + predicted - hits
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, hits / union, np.nan)
            accuracy = np.where(truth > 0, hits / truth, np.nan)
        classes = [k for k in range(self.num_classes) if k != self.ignore_index]
        total = int(self.confusion.sum())
        return {
            "mIoU": _nanmean(iou[classes]),
            "mAcc": _nanmean(accuracy[classes]),
            "pixel_accuracy": float(hits.sum() / total) if total else UNDEFINED,
            "per_class_IoU": {self.class_names[k]: _value(iou[k]) for k in classes},
            "per_class_Acc": {self.class_names[k]: _value(accuracy[k]) for k in classes},
            "pixels": total,
        }


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


def _defined_mean(values: np.ndarray) -> float:
    defined = values[values > -1]  # COCO marks "no ground truth" with -1
    return float(defined.mean()) if defined.size else UNDEFINED


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else UNDEFINED


def _value(value: float) -> float:
    return UNDEFINED if np.isnan(value) else float(value)


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
