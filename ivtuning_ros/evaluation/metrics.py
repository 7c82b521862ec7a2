"""Accuracy metrics of detection and segmentation: COCO box AP and segmentation IoU.

Detection uses pycocotools (AP over IoU 0.50:0.95, 101 recall points, up to 100
detections per image, all areas); segmentation accumulates one confusion matrix
over all pixels. In every result -1.0 means undefined: there was nothing to
measure (no ground truth for that class, or none at all).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

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


def _defined_mean(values: np.ndarray) -> float:
    defined = values[values > -1]  # COCO marks "no ground truth" with -1
    return float(defined.mean()) if defined.size else UNDEFINED


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else UNDEFINED


def _value(value: float) -> float:
    return UNDEFINED if np.isnan(value) else float(value)
