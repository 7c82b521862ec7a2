"""Folders of real RGB-IR pairs as data sets (`ivtuning_ros.data.pair_folder`), and image
fusion measured and trained on them at each pair's own resolution."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivtuning_ros.commands.cli import main
from ivtuning_ros.data.datasets import open_dataset
from ivtuning_ros.data.pair_folder import PairFolderDataset
from ivtuning_ros.image_fusion.baselines import average
from ivtuning_ros.image_fusion.metrics import fusion_metrics
from ivtuning_ros.image_fusion.pairs import held_out_indices

from .conftest import ROADSCENE, needs_roadscene


def write_pair(root: Path, ir_folder: str, rgb_folder: str, name: str,
               ir: np.ndarray, rgb: np.ndarray, ir_suffix: str = ".png") -> None:
    for folder, image, suffix in ((ir_folder, ir, ir_suffix), (rgb_folder, rgb, ".jpg")):
        path = root / folder / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)


def test_layouts_sizes_bit_depths_and_conditions(tmp_path):
    rng = np.random.default_rng(0)
    ir16 = rng.integers(0, 65535, (120, 160), dtype=np.uint16)
    rgb = rng.integers(0, 255, (329, 500, 3), dtype=np.uint8)
    write_pair(tmp_path / "a", "ir", "vi", "night/0001", ir16, rgb)
    write_pair(tmp_path / "a", "ir", "vi", "day/0002", ir16[:, :, None].astype(np.uint8),
               rgb, ".bmp")
    write_pair(tmp_path / "a", "ir", "vi", "unpaired", ir16, rgb)
    (tmp_path / "a" / "vi" / "unpaired.jpg").unlink()
    dataset = open_dataset("folder", tmp_path / "a")
    assert dataset.names == ["day/0002", "night/0001"] and dataset.unpaired == 1
    night = dataset[1]
    assert night.ir.dtype == np.uint16 and night.ir.shape == (120, 160)
    assert night.rgb.shape == (329, 500, 3) and night.condition == "night"
    assert dataset[0].ir.dtype == np.uint8 and dataset[0].condition == "day"
    # LLVIP's names, with a split sub-folder.
    write_pair(tmp_path / "b", "infrared/test", "visible/test", "x", ir16, rgb)
    assert PairFolderDataset(tmp_path / "b", split="test").names == ["x"]


def test_a_folder_without_pairs_names_what_it_found(tmp_path):
    (tmp_path / "thermal").mkdir()
    with pytest.raises(FileNotFoundError, match="has no visible image folder .it has: thermal"):
        PairFolderDataset(tmp_path)
    (tmp_path / "rgb").mkdir()
    assert cv2.imwrite(str(tmp_path / "rgb" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="0 images in 'thermal/', 1 in 'rgb/'"):
        PairFolderDataset(tmp_path)


def test_held_out_pairs_are_reproducible():
    assert held_out_indices(221, 40, 0) == held_out_indices(221, 40, 0)
    assert len(set(held_out_indices(221, 40, 0))) == 40
    with pytest.raises(ValueError, match="--val-pairs"):
        held_out_indices(3, 3, 0)


@needs_roadscene
def test_roadscene_reads_as_a_folder():
    dataset = PairFolderDataset(ROADSCENE)
    assert len(dataset) == 221
    sample = dataset[0]
    assert sample.ir.dtype == np.uint8 and sample.ir.shape == sample.rgb.shape[:2]
    assert sample.rgb.shape[:2] == (329, 500)  # odd, not a multiple of 32


@needs_roadscene
def test_eval_fusion_measures_each_pair_at_its_own_size(tmp_path):
    """The command's numbers are the metric functions on the pair as stored: no resize."""
    assert main(["eval", "--fusion", "--data", "folder", "--root", str(ROADSCENE),
                 "--limit", "1", "--fusion-checkpoint", "none", "--json",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "fusion_report.json").read_text())
    assert set(report) == {"all"}  # RoadScene names no conditions: one table, once
    name = PairFolderDataset(ROADSCENE).names[0]
    ir = cv2.imread(str(ROADSCENE / "cropinfrared" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    rgb = cv2.imread(str(ROADSCENE / "crop_LR_visible" / f"{name}.jpg"))[..., ::-1] / 255.0
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    fused = average(ir / 255.0, y)
    expected = fusion_metrics(255 * fused, ir.astype(np.float64), 255 * y)
    for metric, value in expected.items():
        assert report["all"]["average"][metric] == pytest.approx(value, rel=2e-3, abs=2e-3), \
            metric
    sheet = cv2.imread(str(tmp_path / "fusion_contact_sheet.png"))
    assert sheet.shape[0] - 18 == round(240 * 329 / 500)  # the pair's aspect ratio kept


@needs_roadscene
def test_train_fusion_on_a_folder_with_validation_pairs(tmp_path):
    assert main(["train-fusion", "--data", "folder", "--root", str(ROADSCENE), "--recipe",
                 "paper", "--steps", "2", "--batch-size", "2", "--val-pairs", "1",
                 "--val-every", "2", "--dim", "16", "--out", str(tmp_path), "--quiet"]) == 0
    rows = (tmp_path / "validation.csv").read_text().split()
    assert rows[0] == "step,validation_loss" and rows[1].startswith("2,")
    assert (tmp_path / "validation.png").stat().st_size > 0
    assert (tmp_path / "fusion_best.pth").is_file()
