"""`ivtuning demo`'s pipeline on a short run: files written, every condition shown (a model
with all three heads: the contact sheet gains the saliency column)."""
import json

import cv2
import pytest

pytest.importorskip("rclpy")

from PIL import Image  # noqa: E402

from ivtuning_ros.commands.demo import run_demo  # noqa: E402


def test_demo_writes_gif_contact_sheet_and_stats(tmp_path):
    stats = run_demo(tmp_path, frames=9, rate=3.0, parameters={
        "model_config": "ivt_tiny_sod_test.yaml", "device": "cpu", "score_threshold": 0.0},
        untrained=True)
    assert stats["weights"] == "untrained" and stats["frames_published"] == 9
    # A model faster than the cameras: every frame comes back complete and fused.
    assert stats["frames_with_results"] == 9
    assert stats["frames_fused"] == 9
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    gif = Image.open(tmp_path / "demo.gif")
    assert gif.n_frames == stats["frames_with_results"]
    sheet = cv2.imread(str(tmp_path / "contact_sheet.png"))
    # RGB | raw IR | registered IR | fused (M2PN) | detections + mask | saliency (SOD head)
    assert sheet.shape[1] == 6 * 320 and sheet.shape[0] % 240 == 0 and sheet.shape[0] >= 240
    assert stats["fused_images"] >= 1
    assert stats["saliency_images"] >= 1
