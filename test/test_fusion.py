"""M2PN image fusion: the network's size, its losses and memory, the quality scorer's
contract, training lowering the loss, the ten metrics on hand-computed cases (SSIM against
scikit-image, VIF against sewar), the baselines, and `ivtuning eval --fusion`."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ivtuning_ros.commands.cli import main
from ivtuning_ros.image_fusion import metrics
from ivtuning_ros.image_fusion.baselines import average, laplacian_pyramid, max_absolute
from ivtuning_ros.image_fusion.losses import (
    contrast_loss,
    fusion_loss,
    infrared_saliency,
    intensity_weights,
    residual_prior,
)
from ivtuning_ros.image_fusion.quality import HandcraftedScorer
from ivtuning_ros.model.image_fusion.checkpoint import load_fusion, save_fusion
from ivtuning_ros.model.image_fusion.m2pn import M2PN, M2PNConfig, MemoryBank, MemoryGuidedFusion

TINY = M2PNConfig(dim=16, heads=2, memory_slots=8)


def smooth_images(batch=2, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = F.avg_pool2d(torch.rand(batch, 2, size, size, generator=generator), 5, 1, 2)
    images = (images - images.amin((2, 3), keepdim=True)) / (
        images.amax((2, 3), keepdim=True) - images.amin((2, 3), keepdim=True))
    return images[:, :1], images[:, 1:]


def test_parameter_count_matches_the_specification():
    assert sum(p.numel() for p in M2PN().parameters()) == 963_017
    assert sum(p.numel() for p in M2PN(M2PNConfig(dim=192)).parameters()) == 1_030_289
    separate = M2PN(M2PNConfig(siamese=False))
    assert sum(p.numel() for p in separate.parameters()) == 963_017 + 14_032


def test_a_tiny_fusion_model_lowers_its_loss():
    torch.manual_seed(0)
    model = M2PN(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ir, visible = smooth_images()
    losses = []
    for _ in range(15):
        output = model(ir, visible)
        loss = fusion_loss(output.fused, ir, visible)["fusion"] + contrast_loss(output)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_residual_prior_weight_lies_between_a_half_and_two_thirds():
    ir, visible = smooth_images(batch=4)
    _, lam = residual_prior(ir, visible * 0)
    assert ((lam >= 0.5) & (lam <= 2 / 3 + 1e-6)).all()


def test_with_k_zero_the_infrared_weight_is_saliency_above_a_half():
    ir, visible = smooth_images()
    w_ir, w_vi = intensity_weights(ir, visible, k=0.0)
    assert torch.equal(w_ir, (infrared_saliency(ir) > 0.5).float())
    assert torch.equal(w_ir + w_vi, torch.ones_like(w_ir))


def test_memory_guided_fusion_weights_sum_to_one_per_head():
    fusion = MemoryGuidedFusion(16, 2)
    prompt, alpha = fusion(torch.randn(3, 16), torch.randn(3, 16), torch.randn(3, 16))
    assert prompt.shape == (3, 16)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 2))


def test_memory_retrieval_is_a_convex_mix_and_an_update_moves_one_slot_by_beta():
    bank = MemoryBank(slots=4, dim=8, momentum=0.1, kappa=0.5, window=16)
    theta = torch.randn(1, 8)
    weights = torch.softmax(bank.similarity(theta), dim=-1)
    torch.testing.assert_close(bank.retrieve(theta), weights @ bank.slots)
    before = bank.slots.clone()
    nearest = bank.similarity(theta).argmax()
    assert bank.update(theta, torch.tensor([0.9])).all()  # no history yet: accepted
    changed = (bank.slots != before).any(dim=1)
    assert changed.tolist() == [i == nearest for i in range(4)]
    torch.testing.assert_close(bank.slots[nearest], 0.9 * before[nearest] + 0.1 * theta[0])
    bank.update(theta, torch.tensor([0.9]))  # history now [0.9, 0.9]: threshold 0.9
    frozen = bank.slots.clone()
    assert not bank.update(theta, torch.tensor([0.5])).any()
    assert torch.equal(bank.slots, frozen)


def test_quality_scorer_prefers_sharp_exposed_and_clean_images():
    scorer = HandcraftedScorer()
    base, _ = smooth_images(batch=1, size=96)
    sources = base * 0.8 + 0.1
    blurred = F.avg_pool2d(F.pad(base, (3, 3, 3, 3), mode="reflect"), 7, 1)
    noisy = (base + 0.1 * torch.randn(base.shape, generator=torch.Generator().manual_seed(1))
             ).clamp(0, 1)

    def score(image):
        return scorer.score(image, sources, sources).item()

    assert score(base) > score(blurred)
    assert score(base) > score(base * 0.2)
    assert score(base) > score(noisy)


def test_metrics_give_the_hand_computed_values():
    two_levels = np.array([[0.0, 255.0], [0.0, 255.0]])
    assert metrics.entropy(two_levels) == pytest.approx(1.0)
    assert metrics.entropy(np.full((8, 8), 7.0)) == 0.0
    checkerboard = (np.indices((8, 8)).sum(0) % 2) * 255.0
    assert metrics.spatial_frequency(checkerboard) == pytest.approx(255 * np.sqrt(2))
    assert metrics.standard_deviation(two_levels) == pytest.approx(127.5)
    ramp = np.tile(np.arange(16.0) * 4, (16, 1))  # d/dx = 4, d/dy = 0
    assert metrics.average_gradient(ramp) == pytest.approx(4 / np.sqrt(2))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64)).astype(float)
    assert metrics.mutual_information(image, image) == pytest.approx(metrics.entropy(image))
    assert metrics.correlation(image, image, image) == pytest.approx(1.0)
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    assert metrics.vif(image, image) == pytest.approx(1.0)
    assert metrics.qabf(image, image, image) == pytest.approx(0.97479, abs=1e-5)


def test_ssim_matches_scikit_image_and_vif_matches_sewar():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    sewar = pytest.importorskip("sewar.full_ref")
    rng = np.random.default_rng(1)
    from scipy import ndimage
    a = np.clip(ndimage.gaussian_filter(rng.uniform(0, 255, (72, 88)), 2) * 3 - 200, 0, 255)
    b = np.clip(ndimage.gaussian_filter(rng.uniform(0, 255, (72, 88)), 1) * 2 - 130, 0, 255)
    fused = (a + b) / 2
    assert metrics.ssim(fused, a) == pytest.approx(skimage_metrics.structural_similarity(
        fused, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
        data_range=255), abs=1e-9)
    assert metrics.vif(a, fused) == pytest.approx(sewar.vifp(a, fused), abs=1e-9)


def test_baselines():
    rng = np.random.default_rng(2)
    ir, visible = rng.uniform(0, 1, (2, 64, 80))
    assert np.allclose(average(ir, visible), (ir + visible) / 2)
    assert np.allclose(max_absolute(ir, visible), np.maximum(ir, visible))
    assert np.allclose(laplacian_pyramid(ir, ir), ir, atol=1e-5)  # one source: itself


def test_eval_fusion_writes_the_table_and_the_contact_sheet(tmp_path, capsys):
    torch.manual_seed(0)
    save_fusion(M2PN(TINY), tmp_path / "m2pn.pth", half=True)
    assert load_fusion(tmp_path / "m2pn.pth").config.dim == 16
    assert main(["eval", "--fusion", "--fusion-checkpoint", str(tmp_path / "m2pn.pth"),
                 "--data", "synthetic", "--scene-scale", "0.25", "--length", "3",
                 "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "fusion_report.json").read_text())
    assert set(report) == {"day", "night", "fog", "all"}
    assert set(report["all"]) == {"average", "max_absolute", "laplacian_pyramid", "m2pn"}
    assert set(report["all"]["m2pn"]) == {*metrics.METRICS, "dark_lift"}
    assert (tmp_path / "eval" / "fusion_contact_sheet.png").stat().st_size > 0


def test_train_fusion_resumes_where_it_stopped(tmp_path):
    args = ["train-fusion", "--data", "synthetic", "--scene-scale", "0.25", "--length", "4",
            "--batch-size", "2", "--dim", "16", "--out", str(tmp_path), "--quiet"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3", "--resume"]) == 0
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == [
        "1", "2", "3"]
    assert load_fusion(tmp_path / "fusion.pth").config.dim == 16


def test_dark_lift_measures_a_veil_over_what_is_dark_in_both_sources():
    from ivtuning_ros.image_fusion.evaluate import dark_lift

    rng = np.random.default_rng(0)
    ir, visible = rng.uniform(0, 1, (2, 64, 64))
    assert dark_lift(np.maximum(ir, visible), ir, visible) == pytest.approx(0.0)
    assert dark_lift((ir + visible) / 2, ir, visible) < 0
    assert dark_lift(np.maximum(ir, visible) + 0.2, ir, visible) == pytest.approx(0.2)
