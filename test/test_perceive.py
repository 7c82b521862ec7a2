"""`ivtuning perceive` on real RGB-IR pairs (RoadScene), and the checkpoints' record of their
training data: read, carried through save/export/--init, flagged when synthetic only."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from ivtuning_ros.commands.cli import main
from ivtuning_ros.commands.perceive import contact_sheet
from ivtuning_ros.data.pair_folder import PairFolderDataset
from ivtuning_ros.data.synthetic import SyntheticDataset
from ivtuning_ros.model import build_model, load_checkpoint, save_checkpoint
from ivtuning_ros.model.checkpoint import (
    load_checkpoint_as,
    record_training,
    synthetic_only,
    trained_on,
    training_data,
)
from ivtuning_ros.train.loop import TrainOptions, train

from .conftest import MODELS, ROADSCENE, needs_roadscene

SYNTHETIC_WARNING = "trained on synthetic scenes only"


def perceive(tmp_path, *options: str) -> int:
    return main(["perceive", "--root", str(ROADSCENE), "--out", str(tmp_path / "out"),
                 *options])


@needs_roadscene
def test_real_pairs_give_overlays_fused_images_json_and_coco_results(tmp_path, capsys):
    code = perceive(tmp_path, "--config", "ivt_tiny_test.yaml", "--limit", "2",
                    "--score-threshold", "0")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "heads are untrained" in captured.err and SYNTHETIC_WARNING not in captured.err
    assert "perceive: 2 pairs" in captured.out
    out = tmp_path / "out"
    pairs = PairFolderDataset(ROADSCENE)
    report = json.loads((out / "detections.json").read_text())
    assert report["model"] == "ivt_tiny_test" and report["weights_trained_on"] == "untrained"
    assert [image["name"] for image in report["images"]] == pairs.names[:2]
    for index, image in enumerate(report["images"]):
        shape = pairs[index].rgb.shape
        for folder in ("overlays", "fused"):
            written = cv2.imread(str(out / folder / f"{image['name']}.png"))
            assert written is not None and written.shape == shape, folder
        assert (image["height"], image["width"]) == shape[:2]
        assert image["detections"], "score threshold 0 keeps every query"
        for detection in image["detections"]:
            x0, y0, x1, y1 = detection["box_xyxy"]
            assert 0 <= x0 <= x1 <= shape[1] and 0 <= y0 <= y1 <= shape[0]
            assert detection["class"] in report["classes"] and 0 <= detection["score"] <= 1
    assert_coco_files_load(out, report)
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    height, width = pairs[0].rgb.shape[:2]
    assert sheet.shape[0] == 240 and sheet.shape[1] >= round(width * 240 / height)


def assert_coco_files_load(out, report: dict) -> None:
    """pycocotools reads the results against the images file; each result is one of
    detections.json's boxes, as xywh."""
    results = json.loads((out / "coco_results.json").read_text())
    images = json.loads((out / "coco_images.json").read_text())
    assert [i["file_name"] for i in images["images"]] == [i["name"] for i in report["images"]]
    assert len(results) == sum(len(i["detections"]) for i in report["images"])
    first = report["images"][0]["detections"][0]
    x0, y0, x1, y1 = first["box_xyxy"]
    assert results[0]["image_id"] == 1 and results[0]["score"] == first["score"]
    assert results[0]["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.011)
    assert images["categories"][results[0]["category_id"] - 1]["name"] == first["class"]
    coco = pytest.importorskip("pycocotools.coco")
    truth = coco.COCO(str(out / "coco_images.json"))
    assert len(truth.loadRes(str(out / "coco_results.json")).getAnnIds()) == len(results)


@needs_roadscene
def test_the_demo_weights_are_flagged_synthetic_only_on_real_pairs(tmp_path, capsys):
    code = perceive(tmp_path, "--limit", "1", "--fusion-checkpoint", "none")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if SYNTHETIC_WARNING in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ivt_demo's weights")
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert report["weights_trained_on"] == "synthetic"
    assert not (tmp_path / "out" / "fused").exists()


def test_a_folder_without_pairs_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["perceive", "--root", str(tmp_path / "missing"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ivtuning perceive: error: pair folder") and "missing" in err


def test_contact_sheet_keeps_each_aspect_ratio():
    images = [np.full((100, 200, 3), 50, np.uint8), np.full((50, 300, 3), 100, np.uint8),
              np.full((300, 150, 3), 150, np.uint8), np.full((120, 120, 3), 200, np.uint8)]
    sheet = contact_sheet(images, columns=3, height=60)
    assert sheet.shape == (120, 120 + 360 + 30, 3)  # widths 60 * aspect; row 2 padded
    assert (sheet[:60, 120:480] == 100).all() and (sheet[60:, 60:] == 0).all()


def test_the_shipped_demo_weights_read_as_synthetic_only():
    model, config = load_checkpoint(MODELS / "ivt_demo.pth")
    # The detector's record, then the SOD head's run (make demo-sod-weights)
    assert config.name == "ivt_demo" and trained_on(model) == ["synthetic", "synthetic(seed=3)"]
    assert synthetic_only(trained_on(model)) and training_data(trained_on(model)) == "synthetic"


def test_the_record_survives_save_export_adapter_and_init(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    record_training(model, "synthetic(seed=0)")
    record_training(model, "synthetic(seed=0)")  # a resumed run adds nothing
    save_checkpoint(model, tiny_config, tmp_path / "full.pth")
    exported, _ = load_checkpoint(tmp_path / "full.pth")
    save_checkpoint(exported, tiny_config, tmp_path / "fp16.pth", half=True)  # `export`
    assert trained_on(load_checkpoint(tmp_path / "fp16.pth")[0]) == ["synthetic(seed=0)"]
    torch.save(model.backbone.swin.state_dict(), tmp_path / "swin.pth")
    tiny_config.backbone.weights = str(tmp_path / "swin.pth")
    save_checkpoint(model, tiny_config, tmp_path / "adapter.pth", adapter=True)
    assert trained_on(load_checkpoint(tmp_path / "adapter.pth")[0]) == ["synthetic(seed=0)"]
    changed, _ = load_checkpoint_as(tmp_path / "full.pth", ["prompter.split_ratio=0.5"])
    record_training(changed, "m3fd(/data/m3fd)")  # fine-tuned on real data after
    assert training_data(trained_on(changed)) == "synthetic+m3fd"
    assert not synthetic_only(trained_on(changed))


def test_a_checkpoint_without_a_record_is_unknown_whatever_its_name(tiny_config, tmp_path):
    tiny_config.name = "ivt_demo"  # the demo's name, not its tensors
    save_checkpoint(build_model(tiny_config), tiny_config, tmp_path / "old.pth")
    payload = torch.load(tmp_path / "old.pth", weights_only=True)
    del payload["trained_on"]  # as written before the record existed
    torch.save(payload, tmp_path / "old.pth")
    model, _ = load_checkpoint(tmp_path / "old.pth")
    assert trained_on(model) == [] and training_data([]) == "unknown"
    assert not synthetic_only([])


def test_training_records_its_dataset(tiny_config, tmp_path):
    torch.manual_seed(0)
    dataset = SyntheticDataset(1, seed=3, conditions=("day",), rgb_size=(60, 80),
                               ir_size=(64, 80))
    options = TrainOptions(iterations=1, batch_size=1, warmup_steps=1, out_dir=str(tmp_path))
    train(build_model(tiny_config), tiny_config, dataset, options, torch.device("cpu"),
          progress=False)
    payload = torch.load(tmp_path / "last.pth", weights_only=True)
    assert payload["trained_on"] == ["synthetic(seed=3)"]


def test_node_diagnostics_report_the_weights_training_data(tiny_config, tmp_path,
                                                           monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from ivtuning_ros.ros.node import PerceptionNode

    model = build_model(tiny_config)
    record_training(model, "synthetic(seed=0)")
    save_checkpoint(model, tiny_config, tmp_path / "tiny.pth")
    # This run's own DDS domain, as test/ros/conftest.py chooses it.
    monkeypatch.setenv("ROS_DOMAIN_ID", str(os.getpid() % 200 + 20))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = PerceptionNode(context=context, parameter_overrides=[
            Parameter("checkpoint", value=str(tmp_path / "tiny.pth")),
            Parameter("device", value="cpu")])
        reports = []
        node._diagnostics = type("Capture", (), {"publish": staticmethod(reports.append)})()
        node.trigger_configure()
        node._publish_diagnostics()
        node.destroy_node()
    finally:
        context.try_shutdown()
    values = {kv.key: kv.value for kv in reports[-1].status[0].values}
    assert (values["state"], values["weights_trained_on"]) == ("inactive", "synthetic")
