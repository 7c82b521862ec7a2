"""Contrastive denoising queries: group sizes, attention mask, noise bands, label flips,
and the DINO head's split of DN and matching queries."""
import pytest
import torch
from torch import nn

from ivtuning_ros.model import build_model
from ivtuning_ros.model.box_ops import box_cxcywh_to_xyxy
from ivtuning_ros.train.denoising import DenoisingConfig, make_denoising_queries


def make_targets(counts, seed=0, num_classes=6):
    """Targets with small boxes near the centre: no corner noise ever reaches the border."""
    generator = torch.Generator().manual_seed(seed)
    return [{"labels": torch.randint(0, num_classes, (n,), generator=generator),
             "boxes": torch.cat([torch.rand(n, 2, generator=generator) * 0.2 + 0.4,
                                 torch.rand(n, 2, generator=generator) * 0.05 + 0.1], dim=1)}
            for n in counts]


def embedding(num_classes=6, dim=8):
    torch.manual_seed(0)
    return nn.Embedding(num_classes, dim)


@pytest.mark.parametrize(("counts", "num_dn", "groups"), [
    ([3, 1], 100, 33), ([1], 100, 100), ([150, 2], 100, 1), ([0, 4], 10, 2)])
def test_group_count_and_sizes(counts, num_dn, groups):
    dn = make_denoising_queries(make_targets(counts), embedding(), 6, 20,
                                DenoisingConfig(num_dn_queries=num_dn))
    max_gt = max(counts)
    assert (dn.num_groups, dn.max_gt, dn.pad_size) == (groups, max_gt, 2 * max_gt * groups)
    assert dn.query.shape == (len(counts), dn.pad_size, 8)
    assert dn.reference.shape == (len(counts), dn.pad_size, 4)
    assert dn.attn_mask.shape == (dn.pad_size + 20,) * 2 and dn.attn_mask.dtype == torch.bool
    for count, (query_idx, target_idx) in zip(counts, dn.positive_indices, strict=True):
        assert len(query_idx) == len(target_idx) == count * groups


def test_three_boxes_and_100_queries_give_33_groups_of_6():
    dn = make_denoising_queries(make_targets([3]), embedding(), 6, 900, DenoisingConfig())
    assert (dn.num_groups, dn.pad_size) == (33, 198)


def test_attention_mask_by_hand_for_one_box_in_two_groups():
    dn = make_denoising_queries(make_targets([1]), embedding(), 6, 3,
                                DenoisingConfig(num_dn_queries=2))
    assert (dn.num_groups, dn.pad_size) == (2, 4)
    # rows attend, columns are attended; DN 0-1 = group 0 (pos, neg), 2-3 = group 1, 4-6 matching
    x, o = True, False
    expected = torch.tensor([
        [o, o, x, x, o, o, o],
        [o, o, x, x, o, o, o],
        [x, x, o, o, o, o, o],
        [x, x, o, o, o, o, o],
        [x, x, x, x, o, o, o],
        [x, x, x, x, o, o, o],
        [x, x, x, x, o, o, o],
    ])
    assert torch.equal(dn.attn_mask, expected)
    assert [t.tolist() for t in dn.positive_indices[0]] == [[0, 2], [0, 0]]


def corner_offsets(reference, boxes):
    """Corner moves of noised cxcywh references from cxcywh boxes, in half widths/heights."""
    half = torch.cat([boxes[:, 2:], boxes[:, 2:]], dim=1) / 2
    return (box_cxcywh_to_xyxy(reference) - box_cxcywh_to_xyxy(boxes)) / half


def test_positive_noise_stays_inside_one_half_size_and_negatives_between_one_and_two():
    targets = make_targets([10, 7])
    dn = make_denoising_queries(targets, embedding(), 6, 20,
                                DenoisingConfig(num_dn_queries=100, box_noise_scale=1.0),
                                generator=torch.Generator().manual_seed(1))
    for image, (query_idx, target_idx) in enumerate(dn.positive_indices):
        boxes = targets[image]["boxes"][target_idx]
        positive = corner_offsets(dn.reference[image, query_idx], boxes).abs()
        negative = corner_offsets(dn.reference[image, query_idx + dn.max_gt], boxes).abs()
        assert (positive < 1).all()
        # negatives whose corners cross collapse to zero width/height: check the others
        size = dn.reference[image, query_idx + dn.max_gt, 2:]
        kept = torch.cat([size, size], dim=1) > 0
        assert kept.float().mean() > 0.5
        assert (negative[kept] >= 1 - 1e-4).all() and (negative[kept] < 2).all()
        # both bands are filled, not just touched
        assert positive.max() > 0.9 and negative[kept].min() < 1.1 and negative.max() > 1.9


def test_padding_slots_are_zero_queries_at_the_centre():
    dn = make_denoising_queries(make_targets([3, 1]), embedding(), 6, 20, DenoisingConfig())
    used = torch.zeros(dn.pad_size, dtype=torch.bool)
    query_idx = dn.positive_indices[1][0]
    used[query_idx] = used[query_idx + dn.max_gt] = True
    assert (dn.query[1, ~used] == 0).all()
    assert (dn.reference[1, ~used] == 0.5).all()
    assert (dn.query[1, used] != 0).any(dim=-1).all()


def test_labels_flip_at_a_quarter_of_the_rate_to_a_random_class():
    num_classes = 6
    targets = make_targets([100], seed=2, num_classes=num_classes)
    one_hot = nn.Embedding(num_classes, num_classes)
    nn.init.eye_(one_hot.weight)  # the query is the one-hot noised label
    dn = make_denoising_queries(targets, one_hot, num_classes, 20,
                                DenoisingConfig(num_dn_queries=10000, label_noise_scale=0.5),
                                generator=torch.Generator().manual_seed(3))
    assert dn.num_groups == 100
    noised = dn.query[0].argmax(-1).view(2 * dn.num_groups, -1)
    changed = (noised != targets[0]["labels"]).float().mean().item()
    # replaced with probability 0.5 / 2; a replacement keeps the label 1 time in K
    expected = 0.25 * (num_classes - 1) / num_classes
    assert abs(changed - expected) < 0.015  # n = 20000: 5 standard deviations


def test_no_noise_keeps_labels_and_boxes():
    targets = make_targets([4])
    config = DenoisingConfig(num_dn_queries=8, label_noise_scale=0.0, box_noise_scale=0.0)
    table = embedding()
    dn = make_denoising_queries(targets, table, 6, 20, config)
    for copy in range(2 * dn.num_groups):
        slots = slice(copy * 4, copy * 4 + 4)
        torch.testing.assert_close(dn.reference[0, slots], targets[0]["boxes"])
        torch.testing.assert_close(dn.query[0, slots], table(targets[0]["labels"]))


def test_no_targets_give_none():
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    assert make_denoising_queries([empty, empty], embedding(), 6, 20, DenoisingConfig()) is None
    assert make_denoising_queries([], embedding(), 6, 20, DenoisingConfig()) is None


def test_dn_queries_leave_the_matching_predictions_unchanged(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config).train()
    generator = torch.Generator().manual_seed(0)
    rgb, ir = torch.randn(2, 3, 64, 80, generator=generator), torch.randn(2, 1, 64, 80)
    head = model.detection
    dn = make_denoising_queries(make_targets([2, 3]), head.label_embedding, 6,
                                tiny_config.detection.num_queries, DenoisingConfig())
    with torch.no_grad():
        plain, noised = model(rgb, ir), model(rgb, ir, denoising=dn)
    layers = [plain, *plain["aux_outputs"], plain["enc_outputs"]]
    noised_layers = [noised, *noised["aux_outputs"], noised["enc_outputs"]]
    for expected, actual in zip(layers, noised_layers, strict=True):
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5)
    assert "dn_outputs" not in plain
    assert len(noised["dn_outputs"]) == tiny_config.detection.decoder_layers
    for layer in noised["dn_outputs"]:
        assert layer["pred_logits"].shape == (2, dn.pad_size, 6)
        assert layer["pred_boxes"].shape == (2, dn.pad_size, 4)
