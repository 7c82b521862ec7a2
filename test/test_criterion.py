"""Set criterion: exact values on perfect and hand-computed cases, monotonic box losses,
DN losses through the real model, segmentation cross-entropy."""
import copy
import math

import pytest
import torch

from ivtuning_ros.model import build_model
from ivtuning_ros.train.criterion import SetCriterion, focal_loss
from ivtuning_ros.train.denoising import DenoisingConfig, make_denoising_queries
from ivtuning_ros.train.matcher import HungarianMatcher

TARGETS = [{"labels": torch.tensor([1, 0]),
            "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.1, 0.2]])}]


def criterion(**kwargs):
    return SetCriterion(num_classes=3, matcher=HungarianMatcher(), **kwargs)


def perfect_outputs(targets, num_queries=5, num_classes=3):
    """Queries 1.. copy the targets with +8 logits; every other logit is -8."""
    logits = torch.full((len(targets), num_queries, num_classes), -8.0)
    boxes = torch.full((len(targets), num_queries, 4), 0.5)
    for image, target in enumerate(targets):
        count = len(target["labels"])
        logits[image, 1 + torch.arange(count), target["labels"]] = 8.0
        boxes[image, 1:1 + count] = target["boxes"]
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_perfect_predictions_cost_nothing():
    outputs = perfect_outputs(TARGETS)
    outputs["aux_outputs"] = [perfect_outputs(TARGETS)]
    outputs["enc_outputs"] = perfect_outputs(TARGETS)
    losses = criterion()(outputs, TARGETS)
    for suffix in ("", "_0", "_enc"):
        assert losses[f"loss_bbox{suffix}"].item() == 0.0
        assert losses[f"loss_giou{suffix}"].abs().item() < 1e-6
        assert 0.0 < losses[f"loss_cls{suffix}"].item() < 1e-6
    assert torch.isclose(losses["loss"], sum(v for k, v in losses.items() if k != "loss"))


def test_focal_loss_of_one_query_and_one_class_by_hand():
    logit, alpha = 0.3, 0.25
    p = 1 / (1 + math.exp(-logit))
    positive = alpha * (1 - p) ** 2 * -math.log(p)
    negative = (1 - alpha) * p**2 * -math.log(1 - p)
    logits = torch.tensor([[[logit]]])
    assert math.isclose(focal_loss(logits, torch.ones(1, 1, 1)).item(), positive, rel_tol=1e-5)
    assert math.isclose(focal_loss(logits, torch.zeros(1, 1, 1)).item(), negative,
                        rel_tol=1e-5)
    one_class = SetCriterion(num_classes=1, matcher=HungarianMatcher())
    box = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    target = [{"labels": torch.tensor([0]), "boxes": box[0]}]
    losses = one_class({"pred_logits": logits, "pred_boxes": box}, target)
    assert math.isclose(losses["loss_cls"].item(), positive, rel_tol=1e-5)
    # no target: the query is background and the count of boxes is clamped to 1
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = one_class({"pred_logits": logits, "pred_boxes": box}, empty)
    assert math.isclose(losses["loss_cls"].item(), negative, rel_tol=1e-5)
    assert losses["loss_bbox"].item() == losses["loss_giou"].item() == 0.0


def test_box_losses_are_weighted_and_averaged_over_the_boxes():
    outputs = perfect_outputs(TARGETS)
    outputs["pred_boxes"][0, 1, 0] += 0.1  # target 0's cx off by 0.1
    losses = criterion(weights={"loss_bbox": 3.0})(outputs, TARGETS)
    assert math.isclose(losses["loss_bbox"].item(), 3.0 * 0.1 / 2, rel_tol=1e-5)


def test_box_losses_decrease_as_a_box_moves_toward_its_target():
    target = [{"labels": TARGETS[0]["labels"][:1], "boxes": TARGETS[0]["boxes"][:1]}]
    previous = None
    for shift in (0.3, 0.2, 0.1, 0.05, 0.0):
        outputs = perfect_outputs(target)
        outputs["pred_boxes"][0, 1, :2] += shift
        losses = criterion()(outputs, target)
        current = (losses["loss_bbox"].item(), losses["loss_giou"].item())
        if previous is not None:
            assert current[0] < previous[0] and current[1] < previous[1]
        previous = current
    assert previous[0] == 0.0


def test_dn_losses_pair_each_positive_with_its_own_target():
    targets = [TARGETS[0], {"labels": torch.tensor([2]),
                            "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    dn = make_denoising_queries(targets, torch.nn.Embedding(3, 8), 3, 5,
                                DenoisingConfig(num_dn_queries=6))
    # perfect DN predictions: positives reproduce their target, the rest is background
    logits = torch.full((2, dn.pad_size, 3), -20.0)
    boxes = dn.reference.clone()
    for image, (query_idx, target_idx) in enumerate(dn.positive_indices):
        logits[image, query_idx, targets[image]["labels"][target_idx]] = 20.0
        boxes[image, query_idx] = targets[image]["boxes"][target_idx]
    outputs = perfect_outputs(targets)
    outputs["dn_outputs"] = [{"pred_logits": logits, "pred_boxes": boxes}] * 2
    losses = criterion()(outputs, targets, denoising=dn)
    for suffix in ("_dn", "_dn_0"):
        assert losses[f"loss_bbox{suffix}"].item() == 0.0
        assert losses[f"loss_giou{suffix}"].abs().item() < 1e-6
        assert losses[f"loss_cls{suffix}"].item() < 1e-6
    assert "loss_cls_dn" not in criterion()(outputs, targets)


@pytest.fixture
def training_model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config).train()


def test_dn_losses_train_the_label_embedding_through_the_model(training_model, tiny_config):
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randn(2, 3, 64, 80, generator=generator)
    ir = torch.randn(2, 1, 64, 80, generator=generator)
    targets = [TARGETS[0], {"labels": torch.tensor([5]),
                            "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    head = training_model.detection
    dn = make_denoising_queries(targets, head.label_embedding, 6,
                                tiny_config.detection.num_queries, DenoisingConfig(),
                                generator=torch.Generator().manual_seed(1))
    outputs = training_model(rgb, ir, denoising=dn)
    seg_targets = torch.randint(0, 9, (2, 64, 80), generator=generator)
    losses = SetCriterion(6, HungarianMatcher())(outputs, targets, dn, seg_targets)
    names = ("loss_cls", "loss_bbox", "loss_giou")
    suffixes = ("", "_0", "_enc", "_dn", "_dn_0")
    expected = {name + suffix for name in names for suffix in suffixes} | {"loss_seg", "loss"}
    assert set(losses) == expected
    assert all(torch.isfinite(value) for value in losses.values())
    losses["loss"].backward()
    assert head.label_embedding.weight.grad is not None
    assert head.label_embedding.weight.grad.abs().sum() > 0


def test_segmentation_cross_entropy_with_ignore_index_by_hand():
    logits = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]])[None, :, None, :]  # (1, 2, 1, 3)
    labels = torch.tensor([[[0, 1, 255]]])
    losses = criterion(seg_ignore_index=255)({"seg_logits": logits}, [], seg_targets=labels)
    pixel0 = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.0)))
    pixel1 = -math.log(math.exp(3.0) / (math.exp(0.0) + math.exp(3.0)))
    assert math.isclose(losses["loss_seg"].item(), (pixel0 + pixel1) / 2, rel_tol=1e-5)
    everything_ignored = torch.full_like(labels, 255)
    losses = criterion(seg_ignore_index=255)({"seg_logits": logits}, [],
                                             seg_targets=everything_ignored)
    assert losses["loss_seg"].item() == 0.0


def test_eval_outputs_do_not_change_with_dn_support(tiny_model, tiny_config):
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randn(1, 3, 64, 80, generator=generator)
    ir = torch.randn(1, 1, 64, 80, generator=generator)
    with torch.inference_mode():
        plain = tiny_model(rgb, ir)
        explicit = tiny_model(rgb, ir, denoising=None)
    assert set(plain) == set(explicit) == {"ir_used", "pred_logits", "pred_boxes", "seg_logits"}
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        assert torch.equal(plain[key], explicit[key])
    # a training step's forward with DN queries leaves the same state as one without
    # (batch norm statistics move in both)
    with_dn, without_dn = copy.deepcopy(tiny_model).train(), copy.deepcopy(tiny_model).train()
    dn = make_denoising_queries(TARGETS, with_dn.detection.label_embedding, 6,
                                tiny_config.detection.num_queries, DenoisingConfig())
    with torch.no_grad():
        with_dn(rgb, ir, denoising=dn)
        without_dn(rgb, ir)
    with torch.inference_mode():
        after_dn, after_plain = with_dn.eval()(rgb, ir), without_dn.eval()(rgb, ir)
    for key in ("pred_logits", "pred_boxes", "seg_logits"):
        assert torch.equal(after_dn[key], after_plain[key])
