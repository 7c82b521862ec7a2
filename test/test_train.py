"""IV-tuning training: a tiny model overfits, the frozen Swin stays bit-identical, runs
resume, and two gloo processes end with identical trainable weights."""
import csv
import os
import subprocess
import sys

import torch

from ivtuning_ros.data.synthetic import SyntheticDataset
from ivtuning_ros.model import build_model, load_checkpoint
from ivtuning_ros.model.box_ops import box_iou
from ivtuning_ros.runtime import Engine, EngineOptions
from ivtuning_ros.train.batch import Augmentation
from ivtuning_ros.train.loop import TrainOptions, train

from .conftest import MODELS

TINY = str(MODELS / "ivt_tiny_test.yaml")


def tiny_dataset(length=2, seed=0):
    return SyntheticDataset(length, seed=seed, conditions=("day",), rgb_size=(60, 80),
                            ir_size=(64, 80))


def test_tiny_model_overfits_a_handful_of_images(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    dataset = tiny_dataset()
    options = TrainOptions(epochs=100, batch_size=2, lr=2e-3, warmup_steps=10,
                           augmentation=Augmentation(enabled=False), out_dir=str(tmp_path))
    train(model, tiny_config, dataset, options, torch.device("cpu"), progress=False)
    with open(tmp_path / "log.csv") as file:
        rows = list(csv.DictReader(file))
    for name in ("loss", "loss_seg", "loss_bbox", "loss_giou"):
        first = sum(float(row[name]) for row in rows[:10]) / 10
        last = sum(float(row[name]) for row in rows[-10:]) / 10
        assert last < 0.6 * first, f"{name} fell from {first:.3f} only to {last:.3f}"
    engine = Engine(model.eval(), tiny_config, EngineOptions(score_threshold=0.0,
                                                             max_detections=10))
    found = total = 0
    for sample in dataset:
        result = engine.infer(sample.rgb, sample.ir, sample.homography)
        iou = box_iou(torch.from_numpy(sample.boxes), torch.from_numpy(
            result.detections.boxes))[0]
        same_class = torch.from_numpy(sample.labels)[:, None] == torch.from_numpy(
            result.detections.labels)[None]
        found += int(((iou > 0.5) & same_class).any(dim=1).sum())
        total += len(sample.boxes)
    assert found >= total / 2, f"only {found} of {total} boxes found"


def test_frozen_swin_is_bit_identical_and_the_rest_trains(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    frozen = {k: v.clone() for k, v in model.backbone.swin.state_dict().items()}
    trainable = {k: v.clone() for k, v in model.state_dict().items()
                 if not k.startswith("backbone.swin.")}
    options = TrainOptions(epochs=1, batch_size=2, warmup_steps=1, out_dir=str(tmp_path))
    train(model, tiny_config, tiny_dataset(4), options, torch.device("cpu"), progress=False)
    assert all(torch.equal(v, model.backbone.swin.state_dict()[k]) for k, v in frozen.items())
    changed = [k for k, v in trainable.items() if not torch.equal(v, model.state_dict()[k])]
    assert any(k.startswith("backbone.mp_beta.") for k in changed)
    assert any(k.startswith("detection.") for k in changed)
    assert any(k.startswith("segmentation.") for k in changed)
    torch.save(frozen, tmp_path / "base.pth")
    restored, _ = load_checkpoint(tmp_path / "last.pth", base_weights=str(tmp_path / "base.pth"))
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in model.state_dict().items())


def test_resume_continues_where_the_run_stopped(tiny_config, tmp_path):
    options = TrainOptions(epochs=1, batch_size=2, warmup_steps=1, out_dir=str(tmp_path))
    torch.manual_seed(0)
    train(build_model(tiny_config), tiny_config, tiny_dataset(4), options,
          torch.device("cpu"), progress=False)
    options.epochs = 2
    torch.manual_seed(0)
    train(build_model(tiny_config), tiny_config, tiny_dataset(4), options,
          torch.device("cpu"), resume=True, progress=False)
    with open(tmp_path / "log.csv") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file)]
    assert steps == [1, 2, 3, 4]
    assert torch.load(tmp_path / "train_state.pth", weights_only=False)["epoch"] == 2


def test_two_gloo_processes_finish_with_identical_weights(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "ivtuning_ros.commands.cli", "train", "--config", TINY, "--data", "synthetic",
         "--length", "4", "--epochs", "1", "--batch-size", "1", "--device", "cpu",
         "--scene-scale", "0.15", "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trainable weights identical on 2 ranks" in run.stdout
    assert (tmp_path / "last.pth").is_file()


def test_paper_recipes_set_the_papers_values_and_explicit_options_win():
    import argparse

    from ivtuning_ros.commands.train import _schedule_options, add_train_parser

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    seg = _schedule_options(parser.parse_args(
        ["train", "--config", TINY, "--data", "synthetic", "--recipe", "paper-seg"]))
    assert seg == {"epochs": 12, "iterations": 160_000, "batch_size": 2, "optimizer": "sgd",
                   "lr": 1e-3, "weight_decay": 1e-2, "schedule": "poly",
                   "warmup_steps": 1500}
    det = _schedule_options(parser.parse_args(
        ["train", "--config", TINY, "--data", "synthetic", "--recipe", "paper-det",
         "--lr", "2e-4"]))
    assert det["optimizer"] == "adamw" and det["epochs"] == 48 and det["iterations"] is None
    assert det["lr"] == 2e-4 and det["weight_decay"] == 1e-4
    short = _schedule_options(parser.parse_args(
        ["train", "--config", TINY, "--data", "synthetic", "--recipe", "paper-seg",
         "--epochs", "1"]))
    assert short["iterations"] is None and short["epochs"] == 1


def test_iterations_end_inside_an_epoch_with_sgd_and_poly(tiny_config, tmp_path):
    torch.manual_seed(0)
    options = TrainOptions(iterations=3, batch_size=1, optimizer="sgd", lr=1e-3,
                           weight_decay=1e-2, schedule="poly", warmup_steps=1,
                           out_dir=str(tmp_path))
    train(build_model(tiny_config), tiny_config, tiny_dataset(4), options,
          torch.device("cpu"), progress=False)
    with open(tmp_path / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == [1, 2, 3]
    rates = [float(row["lr"]) for row in rows]
    assert rates[0] > rates[1] > rates[2] > 0  # poly decay after the 1-step warm-up


def test_recipe_crops_keep_the_image_at_the_top_left(tiny_config):
    from ivtuning_ros.train.batch import IGNORE, BatchBuilder

    builder = BatchBuilder(tiny_config, Augmentation(crop=(48, 40)), seed=3)
    batch = builder(list(tiny_dataset(4)))
    assert batch.rgb.shape[-2:] == (48, 40) and batch.ir.shape[-2:] == (48, 40)
    assert batch.masks.shape[-2:] == (48, 40)
    for index, (height, width) in enumerate(batch.valid_sizes.tolist()):
        assert 0 < height <= 48 and 0 < width <= 40
        # Beyond the image region: padding only (zero RGB after normalisation, IGNORE labels).
        assert (batch.masks[index, int(height):] == IGNORE).all()
        assert (batch.rgb[index, :, :, int(width):] == 0).all()
        boxes = batch.targets[index]["boxes"]  # cxcywh normalised to the image region
        assert ((boxes[:, :2] >= 0) & (boxes[:, :2] <= 1)).all()
