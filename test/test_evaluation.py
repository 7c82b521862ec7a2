"""Evaluation: COCO AP on hand-made cases, IoU from a known confusion matrix, an end-to-end
run of the engine on synthetic scenes, the plots and the `eval` command."""
import argparse
import json

import numpy as np
import pytest
import torch

from ivtuning_ros.commands.eval import add_eval_parser
from ivtuning_ros.data import M3FD_CLASSES, MFNET_CLASSES, SyntheticDataset
from ivtuning_ros.evaluation.evaluate import evaluate, plot_report, run_evaluation
from ivtuning_ros.evaluation.metrics import DetectionEvaluator, SegmentationEvaluator
from ivtuning_ros.model import build_model
from ivtuning_ros.runtime import Engine, EngineOptions

from .conftest import MODELS

GT_BOXES = np.array([[10, 10, 110, 110], [200, 50, 300, 150], [20, 300, 120, 400]], np.float32)
GT_LABELS = np.array([0, 1, 1])
# A 100 px box shifted by s along x overlaps its original with IoU (100 - s) / (100 + s).
SHIFT_IOU_062 = 100 * 0.38 / 1.62


def evaluator_with(pred_boxes_per_image):
    evaluator = DetectionEvaluator(M3FD_CLASSES)
    for index, pred_boxes in enumerate(pred_boxes_per_image):
        evaluator.add(f"image{index}", GT_BOXES, GT_LABELS, pred_boxes,
                      np.linspace(0.9, 0.5, len(pred_boxes)), GT_LABELS[:len(pred_boxes)])
    return evaluator


def test_perfect_detections_give_ap_one():
    summary = evaluator_with([GT_BOXES, GT_BOXES]).summary()
    assert summary["mAP"] == pytest.approx(1.0)
    assert summary["mAP50"] == pytest.approx(1.0) and summary["mAP75"] == pytest.approx(1.0)
    assert summary["per_class_AP"]["People"] == pytest.approx(1.0)
    assert summary["per_class_AP"]["Car"] == pytest.approx(1.0)
    assert summary["per_class_AP"]["Bus"] == -1.0  # no ground truth: undefined
    assert (summary["images"], summary["ground_truth_boxes"], summary["predictions"]) == (2, 6, 6)


def test_iou_062_counts_at_three_of_ten_thresholds():
    shifted = GT_BOXES + np.array([SHIFT_IOU_062, 0, SHIFT_IOU_062, 0], np.float32)
    evaluator = evaluator_with([shifted, shifted])
    summary = evaluator.summary()
    assert summary["mAP50"] == pytest.approx(1.0)
    assert summary["mAP75"] == pytest.approx(0.0)
    assert summary["mAP"] == pytest.approx(0.3, abs=1e-6)  # IoU 0.50, 0.55, 0.60 of 10
    curves = evaluator.precision_recall(0.5)
    assert set(curves) == {"People", "Car"}
    recall, precision = curves["Car"]
    assert recall.shape == precision.shape == (101,)
    np.testing.assert_allclose(precision, 1.0)
    assert evaluator.precision_recall(0.75)["Car"][1].max() == 0.0
    with pytest.raises(ValueError, match="COCO threshold"):
        evaluator.precision_recall(0.52)


def test_missing_predictions_score_zero_and_missing_ground_truth_is_undefined():
    no_predictions = evaluator_with([np.zeros((0, 4), np.float32)]).summary()
    assert no_predictions["mAP"] == 0.0 and no_predictions["per_class_AP"]["Car"] == 0.0
    assert no_predictions["per_class_AP"]["Truck"] == -1.0
    empty = DetectionEvaluator(M3FD_CLASSES)
    empty.add(0, np.zeros((0, 4)), np.zeros(0), GT_BOXES, np.ones(3), GT_LABELS)
    assert empty.summary()["mAP"] == -1.0
    assert empty.precision_recall() == {}


def test_detection_input_errors():
    evaluator = DetectionEvaluator(M3FD_CLASSES)
    with pytest.raises(ValueError, match="labels must lie"):
        evaluator.add(0, GT_BOXES, [0, 1, 6], GT_BOXES, np.ones(3), GT_LABELS)
    evaluator.add(1, GT_BOXES, GT_LABELS, GT_BOXES, np.ones(3), GT_LABELS)
    with pytest.raises(ValueError, match="already added"):
        evaluator.add(1, GT_BOXES, GT_LABELS, GT_BOXES, np.ones(3), GT_LABELS)


def test_perfect_segmentation_gives_iou_one():
    mask = np.random.default_rng(0).integers(0, 9, (20, 30), dtype=np.uint8)
    evaluator = SegmentationEvaluator(9, class_names=MFNET_CLASSES)
    evaluator.add(mask, mask.copy())
    summary = evaluator.summary()
    assert summary["mIoU"] == 1.0 and summary["mAcc"] == 1.0
    assert summary["pixel_accuracy"] == 1.0 and summary["pixels"] == 600


def test_known_confusion_matrix():
    # ground truth 0 0 0 1 1 2, prediction 0 0 1 1 2 2, over two images; class 3 absent.
    evaluator = SegmentationEvaluator(4)
    evaluator.add(np.array([[0, 0, 0]]), np.array([[0, 0, 1]]))
    evaluator.add(np.array([[1, 1, 2]]), np.array([[1, 2, 2]]))
    np.testing.assert_array_equal(evaluator.confusion, [[2, 1, 0, 0], [0, 1, 1, 0],
                                                        [0, 0, 1, 0], [0, 0, 0, 0]])
    summary = evaluator.summary()
    # IoU = tp / (gt + pred - tp): 2/3, 1/3, 1/2; accuracy = tp / gt: 2/3, 1/2, 1.
    assert summary["per_class_IoU"] == pytest.approx({"0": 2 / 3, "1": 1 / 3, "2": 0.5,
                                                      "3": -1.0})
    assert summary["mIoU"] == pytest.approx(0.5)
    assert summary["mAcc"] == pytest.approx(13 / 18)
    assert summary["pixel_accuracy"] == pytest.approx(4 / 6)


def test_ignore_index_drops_pixels_and_class():
    evaluator = SegmentationEvaluator(3, ignore_index=0)
    evaluator.add(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2]))
    summary = evaluator.summary()
    assert set(summary["per_class_IoU"]) == {"1", "2"}
    assert summary["mIoU"] == pytest.approx(0.5) and summary["pixels"] == 3
    with pytest.raises(ValueError, match="class ids"):
        evaluator.add(np.array([1, 3]), np.array([1, 1]))


@pytest.fixture(scope="module")
def tiny_engine():
    from ivtuning_ros.model import load_config
    config = load_config(MODELS / "ivt_tiny_test.yaml")
    torch.manual_seed(0)
    return Engine(build_model(config), config, EngineOptions(score_threshold=0.001))


@pytest.fixture(scope="module")
def tiny_scenes():
    return SyntheticDataset(3, seed=1, rgb_size=(64, 80), ir_size=(64, 80))


def test_evaluate_end_to_end_report(tiny_engine, tiny_scenes):
    report = evaluate(tiny_engine, tiny_scenes, progress=False)
    json.dumps(report, allow_nan=False)
    assert report["images"] == 3 and report["model"] == "ivt_tiny_test"
    detection, segmentation = report["detection"], report["segmentation"]
    assert set(detection["per_class_AP"]) == set(M3FD_CLASSES)
    for value in (detection["mAP"], detection["mAP50"], *detection["per_class_AP"].values()):
        assert value == -1.0 or 0.0 <= value <= 1.0
    assert detection["predictions"] > 0
    assert set(segmentation["per_class_IoU"]) == set(MFNET_CLASSES)
    assert 0.0 <= segmentation["mIoU"] <= 1.0 and 0.0 <= segmentation["pixel_accuracy"] <= 1.0
    assert segmentation["pixels"] == 3 * 64 * 80
    assert evaluate(tiny_engine, tiny_scenes, limit=1, progress=False)["images"] == 1


def test_model_and_dataset_classes_must_agree(tiny_engine, tiny_scenes):
    other = SyntheticDataset(1, rgb_size=(64, 80), ir_size=(64, 80))
    other.detection_classes = ("Car", "People")
    with pytest.raises(ValueError, match="class ids differ"):
        evaluate(tiny_engine, other, progress=False)


def test_plot_report_writes_pngs(tiny_engine, tiny_scenes, tmp_path):
    evaluation = run_evaluation(tiny_engine, tiny_scenes, progress=False)
    paths = plot_report(evaluation.report(), tmp_path, evaluation.detection)
    assert {path.name for path in paths} == {"per_class_ap.png", "per_class_iou.png",
                                             "pr_curves_iou50.png"}
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_eval_command_writes_report(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--config", str(MODELS / "ivt_tiny_test.yaml"),
                              "--data", "synthetic", "--length", "2", "--seed", "3",
                              "--out", str(tmp_path / "eval"), "--json"])
    assert args.run(args) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["images"] == 2 and report["dataset"] == "synthetic(seed=3)"
    assert json.loads(capsys.readouterr().out) == report
    assert (tmp_path / "eval" / "per_class_iou.png").is_file()


def test_eval_command_needs_a_model(tmp_path):
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--data", "synthetic", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--config"):
        args.run(args)
