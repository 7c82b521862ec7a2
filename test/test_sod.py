"""Salient object detection (issue 28): the CPNet head, the hybrid loss, the metrics against
pysodmetrics, the VT readers, the synthetic ground truth and training the head."""
import math

import cv2
import numpy as np
import pytest
import torch

from ivtuning_ros.data import MFNET_CLASSES, make_scene, open_dataset
from ivtuning_ros.data.vt_sod import VTSODDataset
from ivtuning_ros.evaluation.sod_metrics import SODEvaluator, sod_metrics_module
from ivtuning_ros.model import build_model, load_config
from ivtuning_ros.model.heads.cpnet import CPNetHead
from ivtuning_ros.runtime import Engine, EngineOptions
from ivtuning_ros.train.batch import Augmentation, BatchBuilder
from ivtuning_ros.train.loop import TrainOptions, _optimizer
from ivtuning_ros.train.recipes import RECIPES
from ivtuning_ros.train.sod_loss import IGNORE, hybrid_loss, sod_loss

from .conftest import MODELS

SOD_TINY = MODELS / "ivt_tiny_sod_test.yaml"


@pytest.fixture(scope="module")
def sod_model():
    torch.manual_seed(0)
    config = load_config(SOD_TINY)
    return build_model(config, load_weights=False).eval(), config


# The head --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(37, 53), (64, 80), (71, 45)])
def test_head_gives_one_logit_map_at_odd_input_sizes(size):
    torch.manual_seed(0)
    head = CPNetHead([16, 32, 64, 128], [16, 16, 32, 32]).eval()
    features = [torch.randn(2, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
                for c, s in ((16, 4), (32, 8), (64, 16), (128, 32))]
    maps = head(features, size)
    assert len(maps) == 4
    assert all(m.shape == (2, 1, *size) and torch.isfinite(m).all() for m in maps)
    fused = CPNetHead.fuse(maps)
    assert torch.allclose(fused, maps[0] + maps[1] + maps[2] + maps[3])


def test_model_outputs_and_engine_saliency_at_rgb_size(sod_model):
    model, config = sod_model
    rgb, ir = torch.randn(1, 3, 45, 71), torch.randn(1, 1, 45, 71)
    with torch.no_grad():
        out = model(rgb, ir)
    assert out["sod_logits"].shape == (1, 1, 45, 71) and "sod_deep_logits" not in out
    model.train()
    try:
        deep = model(rgb, ir)["sod_deep_logits"]
    finally:
        model.eval()
    assert [tuple(m.shape) for m in deep] == [(1, 1, 45, 71)] * 4
    engine = Engine(model, config, EngineOptions(device="cpu"))
    scene = make_scene(2, "night", (61, 77), (64, 80))
    result = engine.infer(scene.rgb, scene.ir, scene.homography)
    assert result.saliency.shape == (61, 77) and result.saliency.dtype == np.uint8
    assert result.class_map.shape == (61, 77) and result.detections is not None


def test_sod_config_rejects_wrong_widths():
    with pytest.raises(ValueError, match="sod.channels must be four widths"):
        load_config(SOD_TINY, ["sod.channels=[16, 16]"])


# The hybrid loss, by hand ----------------------------------------------------------------
def test_hybrid_loss_at_zero_logits():
    # p = 0.5 everywhere: BCE = ln 2; IoU: inter 1, union 4 -> 1 - 2 / 4 = 0.5.
    target = torch.tensor([[[1, 0], [0, 1]]])
    loss = hybrid_loss(torch.zeros(1, 1, 2, 2), target)
    assert loss.item() == pytest.approx(math.log(2) + 0.5, abs=1e-6)


def test_hybrid_loss_skips_ignored_pixels():
    # 3 valid pixels at p = 0.5: BCE ln 2; inter 1, union 1.5 + 2 = 3.5 -> 1 - 2 / 3.5.
    target = torch.tensor([[[1, IGNORE], [0, 1]]])
    loss = hybrid_loss(torch.zeros(1, 1, 2, 2), target)
    assert loss.item() == pytest.approx(math.log(2) + 1 - 2 / 3.5, abs=1e-6)


def test_hybrid_loss_of_a_confident_pixel_and_deep_supervision_sum():
    # p = 0.75 on a salient pixel: BCE -ln 0.75; inter 0.75, union 1.75 -> 1 - 1.75 / 2.
    logits = torch.full((1, 1, 1, 1), math.log(3.0))
    target = torch.ones(1, 1, 1, dtype=torch.long)
    expected = -math.log(0.75) + 0.125
    assert hybrid_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    assert sod_loss([logits] * 4, target).item() == pytest.approx(4 * expected, abs=1e-5)


def test_hybrid_loss_averages_iou_over_images():
    # Image 1 perfect-ish vs image 2 empty target: IoU terms are averaged, not pooled.
    logits = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[1, 1]], [[0, 0]]])
    iou_one = 1 - (1 + 1) / (1 + 2 - 1 + 1)        # inter 1, union 3
    iou_two = 1 - (0 + 1) / (1 + 0 - 0 + 1)        # inter 0, union 1
    expected = math.log(2) + (iou_one + iou_two) / 2
    assert hybrid_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


# Metrics ----------------------------------------------------------------------------------
def _fixed_case():
    rng = np.random.default_rng(3)
    gts = [np.zeros((40, 50), np.uint8), np.zeros((40, 50), np.uint8)]
    gts[0][10:30, 12:35] = 1
    gts[1][5:15, 5:45] = 1
    preds = [cv2.GaussianBlur(gt.astype(np.float32) * 200, (9, 9), 3) + rng.uniform(0, 40,
                                                                                   gt.shape)
             for gt in gts]
    return [np.clip(p, 0, 255).astype(np.uint8) for p in preds], gts


def test_metrics_match_pysodmetrics_on_a_fixed_case():
    preds, gts = _fixed_case()
    py_sod_metrics = sod_metrics_module()  # the optional import, as the evaluator makes it
    evaluator = SODEvaluator()
    reference = {"sm": py_sod_metrics.Smeasure(), "wfm": py_sod_metrics.WeightedFmeasure(),
                 "em": py_sod_metrics.Emeasure(), "mae": py_sod_metrics.MAE()}
    for pred, gt in zip(preds, gts, strict=True):
        evaluator.add(pred, gt)
        for metric in reference.values():
            metric.step(pred=pred, gt=gt * 255)
    got = evaluator.summary()
    curve = reference["em"].get_results()["em"]["curve"]
    assert got["S_measure"] == pytest.approx(reference["sm"].get_results()["sm"])
    assert got["weighted_F_measure"] == pytest.approx(reference["wfm"].get_results()["wfm"])
    assert got["E_measure_mean"] == pytest.approx(curve.mean())
    assert got["E_measure_max"] == pytest.approx(curve.max())
    assert got["MAE"] == pytest.approx(reference["mae"].get_results()["mae"])
    assert got["images"] == 2
    # a blurred, noisy copy of the truth: good, not perfect
    assert 0.5 < got["S_measure"] < 1 and 0 < got["MAE"] < 0.3
    assert got["E_measure_mean"] <= got["E_measure_max"] <= 1


def test_mae_of_a_known_map_by_hand():
    gt = np.zeros((4, 4), np.uint8)
    gt[1:3, 1:3] = 1
    pred = gt * 255
    pred[0, 0], pred[1, 1], pred[3, 3] = 255, 0, 255  # three wrong pixels of 16
    evaluator = SODEvaluator()
    evaluator.add(pred.astype(np.uint8), gt)
    assert evaluator.summary()["MAE"] == pytest.approx(3 / 16)


def test_a_perfect_map_scores_one():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:12, 4:15] = 1
    evaluator = SODEvaluator()
    evaluator.add(gt * 255, gt)
    summary = evaluator.summary()
    assert summary["MAE"] == 0.0
    assert summary["S_measure"] == pytest.approx(1.0)
    assert summary["weighted_F_measure"] == pytest.approx(1.0, abs=1e-6)


# VT821 / VT1000 / VT5000 readers on the published layout --------------------------------
def _write_vt(folder, stems, size=(24, 32)):
    rng = np.random.default_rng(0)
    for name in ("RGB", "T", "GT"):
        (folder / name).mkdir(parents=True)
    for stem in stems:
        cv2.imwrite(str(folder / "RGB" / f"{stem}.jpg"),
                    rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        thermal = rng.integers(0, 256, size, dtype=np.uint8)
        cv2.imwrite(str(folder / "T" / f"{stem}.jpg"), cv2.merge([thermal] * 3))
        gt = np.zeros(size, np.uint8)
        gt[4:12, 6:20] = 255
        cv2.imwrite(str(folder / "GT" / f"{stem}.png"), gt)


def test_vt5000_split_layout(tmp_path):
    _write_vt(tmp_path / "VT5000" / "Train", ["1", "2"])
    _write_vt(tmp_path / "VT5000" / "Test", ["7"])
    train = open_dataset("vt", tmp_path / "VT5000", split="Train")
    assert len(train) == 2 and len(VTSODDataset(tmp_path / "VT5000", "test")) == 1
    sample = train[1]
    assert sample.name == "2" and sample.rgb.shape == (24, 32, 3) and sample.ir.shape == (24, 32)
    assert sample.homography is None
    assert set(np.unique(sample.saliency)) == {0, 1}
    assert sample.saliency[4:12, 6:20].all() and sample.saliency.sum() == 8 * 14


def test_vt821_flat_layout_and_missing_files(tmp_path):
    _write_vt(tmp_path / "VT821", ["a"])
    assert VTSODDataset(tmp_path / "VT821")[0].name == "a"
    (tmp_path / "VT821" / "GT" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="has no image named 'a'"):
        VTSODDataset(tmp_path / "VT821")[0]
    with pytest.raises(FileNotFoundError, match="expected layout"):
        VTSODDataset(tmp_path / "nowhere")


# Synthetic ground truth -------------------------------------------------------------------
def test_synthetic_salient_object_is_the_nearest_person_or_vehicle():
    checked = 0
    for seed in range(12):
        scene = make_scene(seed, "day", (120, 160), (128, 160))
        people_and_vehicles = [i for i, label in enumerate(scene.labels) if label != 4]
        ys, xs = np.nonzero(scene.saliency)
        if not people_and_vehicles:
            assert not scene.saliency.any()
            continue
        nearest = scene.boxes[max(people_and_vehicles, key=lambda i: scene.boxes[i, 3])]
        assert xs.min() >= nearest[0] - 1 and xs.max() + 1 <= nearest[2] + 1
        assert ys.min() >= nearest[1] - 1 and abs(ys.max() + 1 - nearest[3]) <= 1
        kinds = {MFNET_CLASSES[c] for c in np.unique(scene.mask[scene.saliency > 0])}
        assert kinds <= {"car", "person", "bike"}
        checked += 1
    assert checked >= 8


def test_saliency_follows_the_mask_through_augmentation():
    config = load_config(SOD_TINY)
    builder = BatchBuilder(config, Augmentation(hflip=1.0, max_zoom=1.5, crop=(48, 64)), seed=3)
    scenes = [make_scene(seed, "fog", (96, 128), (96, 128)) for seed in (1, 5)]
    batch = builder(scenes)
    assert batch.saliency.shape == batch.masks.shape
    salient = batch.saliency == 1
    vehicle_or_person = [MFNET_CLASSES.index(name) for name in ("car", "person", "bike")]
    assert salient.any()
    assert torch.isin(batch.masks[salient], torch.tensor(vehicle_or_person)).all()
    assert ((batch.saliency == IGNORE) == (batch.masks == IGNORE)).all()


# Recipe and training ----------------------------------------------------------------------
def test_paper_sod_recipe_is_adam_with_the_papers_numbers():
    recipe = RECIPES["paper-sod"]
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.epochs, recipe.batch_size,
            recipe.crop) == ("adam", 5e-5, 0.1, 200, 8, (384, 384))
    optimizer = _optimizer([torch.nn.Parameter(torch.zeros(1))],
                           TrainOptions(optimizer="adam", lr=5e-5, weight_decay=0.1))
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["weight_decay"] == 0.1


def test_train_adds_a_sod_head_to_a_trained_model_and_trains_it_alone(tmp_path):
    from ivtuning_ros.commands.cli import main
    from ivtuning_ros.model import load_checkpoint, save_checkpoint
    from ivtuning_ros.model.checkpoint import add_head

    torch.manual_seed(0)
    config = load_config(MODELS / "ivt_tiny_test.yaml")
    base = build_model(config, load_weights=False)
    save_checkpoint(base, config, tmp_path / "base.pth", half=True)
    out = tmp_path / "sod"
    assert main(["train", "--init", str(tmp_path / "base.pth"), "--set",
                 "sod={channels: [16, 16, 32, 32]}", "--set", "detection=null", "--set",
                 "segmentation=null", "--heads-only", "--recipe", "paper-sod", "--crop", "48",
                 "64", "--lr", "1e-2", "--batch-size", "2", "--iterations", "3", "--data",
                 "synthetic", "--length", "2", "--scene-scale", "0.15", "--quiet", "--out",
                 str(out)]) == 0
    trained, trained_config = load_checkpoint(out / "last.pth")  # base: exported by --init
    assert trained_config.sod is not None and trained_config.detection is None
    stored, _ = load_checkpoint(tmp_path / "base.pth")  # fp16-rounded, as trained from
    before = {k: v for k, v in stored.state_dict().items() if k.startswith("backbone.")}
    after = trained.state_dict()
    # --heads-only: the IR embedding, prompter and their BatchNorm statistics stay put
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    fresh = build_model(trained_config, load_weights=False).state_dict()
    assert any(not torch.equal(fresh[k], after[k]) for k in after if k.startswith("sod.")
               and after[k].is_floating_point())
    # add_head (`make demo-sod-weights`): base's tensors bit for bit, plus the head
    add_head(tmp_path / "base.pth", out / "last.pth", "sod", tmp_path / "merged.pth")
    base_state = torch.load(tmp_path / "base.pth", weights_only=False)["state_dict"]
    merged = torch.load(tmp_path / "merged.pth", weights_only=False)
    assert all(torch.equal(base_state[k], merged["state_dict"][k])
               and base_state[k].dtype == merged["state_dict"][k].dtype for k in base_state)
    assert set(merged["state_dict"]) - set(base_state) == {k for k in after
                                                           if k.startswith("sod.")}
    model, merged_config = load_checkpoint(tmp_path / "merged.pth")
    assert merged_config.detection is not None and merged_config.sod is not None
    with torch.no_grad():
        out_merged = model.eval()(torch.zeros(1, 3, 64, 80), torch.zeros(1, 1, 64, 80))
    assert {"pred_logits", "seg_logits", "sod_logits"} <= set(out_merged)


@pytest.mark.parametrize("orig", [(45, 60), (1500, 2000)])  # under and over MAX_LOGIT_PIXELS
def test_saliency_to_original_crops_padding_and_scales_to_uint8(orig):
    from ivtuning_ros.model.postprocess import letterbox_for, saliency_to_original

    letterbox = letterbox_for(*orig, 64, 64)
    logits = torch.full((1, 1, 64, 64), 50.0)  # padding: certainly salient
    rows, cols = letterbox.valid_slices
    logits[..., rows, cols] = 0.0  # the image: p = 0.5
    saliency = saliency_to_original(logits, letterbox)
    assert saliency.shape == (1, *orig) and saliency.dtype == torch.uint8
    assert (saliency == 128).all()  # round(0.5 * 255); nothing of the padding bled in


def test_exported_saliency_matches_torch_and_the_parity_check_guards_it(sod_model, tmp_path):
    from ivtuning_ros.runtime.backends import BackendUnavailable, open_runner, parity
    from ivtuning_ros.runtime.backends.onnx_export import export_onnx, output_names
    from ivtuning_ros.runtime.step import FrameLayout, FrameStep

    model, config = sod_model
    step = FrameStep(model, config, FrameLayout((70, 70), (50, 60), "uint16"), 100,
                     torch.device("cpu"))
    assert output_names(step)[-1] == "saliency"
    path = export_onnx(step, tmp_path / "sod.onnx")
    runner = open_runner("onnxruntime", path, torch.device("cpu"), None, tmp_path)
    report = parity.compare(step, runner, parity.probe_inputs(step, gain_in_graph=True))
    assert report["max_saliency_diff"] <= 1  # rounding at most
    parity.check(report, "onnxruntime")
    with pytest.raises(BackendUnavailable, match="max_saliency_diff"):
        parity.check({**report, "max_saliency_diff": 40.0}, "tensorrt")
