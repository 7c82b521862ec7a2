"""Hungarian matcher: known assignments, one cost by hand, batching, empty targets."""
import math

import torch

from ivtuning_ros.train.matcher import HungarianMatcher

BOXES = torch.tensor([[0.2, 0.3, 0.1, 0.2], [0.6, 0.5, 0.3, 0.2], [0.8, 0.8, 0.2, 0.1]])
LABELS = torch.tensor([0, 2, 1])


def confident_logits(labels, num_classes=3):
    """(N, K) logits: +10 on each label, -10 elsewhere."""
    logits = torch.full((len(labels), num_classes), -10.0)
    logits[torch.arange(len(labels)), labels] = 10.0
    return logits


def test_predictions_equal_to_shuffled_targets_match_back():
    order = torch.tensor([2, 0, 1])  # query q predicts target order[q]
    logits, boxes = confident_logits(LABELS[order])[None], BOXES[order][None]
    query_idx, target_idx = HungarianMatcher()(logits, boxes,
                                               [{"labels": LABELS, "boxes": BOXES}])[0]
    assert query_idx.dtype == target_idx.dtype == torch.int64
    assert query_idx.tolist() == [0, 1, 2]
    assert target_idx.tolist() == order.tolist()


def test_three_queries_two_targets_leave_the_unlike_query_unmatched():
    # query 0 is far from everything, queries 1 and 2 copy targets 1 and 0
    boxes = torch.stack([torch.tensor([0.9, 0.1, 0.05, 0.05]), BOXES[1], BOXES[0]])[None]
    logits = confident_logits(torch.tensor([1, 2, 0]))[None]
    targets = [{"labels": LABELS[:2], "boxes": BOXES[:2]}]
    query_idx, target_idx = HungarianMatcher()(logits, boxes, targets)[0]
    assert query_idx.tolist() == [1, 2]
    assert target_idx.tolist() == [1, 0]


def test_one_pair_cost_by_hand():
    # pred xyxy (0.4, 0.4, 0.6, 0.6), target xyxy (0.45, 0.45, 0.65, 0.65)
    pred, target = torch.tensor([[0.5, 0.5, 0.2, 0.2]]), torch.tensor([[0.55, 0.55, 0.2, 0.2]])
    logits = torch.tensor([[0.0, 1.0]])  # class 0 at probability 0.5
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    cost = matcher.cost_matrix(logits, pred, torch.tensor([0]), target)
    p, alpha = 0.5, 0.25
    class_cost = -alpha * (1 - p) ** 2 * math.log(p) + (1 - alpha) * p**2 * math.log(1 - p)
    l1 = 0.05 + 0.05
    inter, union, enclosing = 0.15 * 0.15, 2 * 0.04 - 0.15 * 0.15, 0.25 * 0.25
    giou = inter / union - (enclosing - union) / enclosing
    expected = 2.0 * class_cost + 5.0 * l1 - 2.0 * giou
    assert cost.shape == (1, 1)
    assert math.isclose(cost.item(), expected, rel_tol=1e-5)


def test_batched_matching_equals_matching_each_image_alone():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 4, generator=generator)
    boxes = torch.rand(3, 8, 4, generator=generator) * 0.5 + 0.2
    targets = [
        {"labels": torch.randint(0, 4, (n,), generator=generator),
         "boxes": torch.rand(n, 4, generator=generator) * 0.5 + 0.2}
        for n in (3, 0, 5)
    ]
    matcher = HungarianMatcher()
    together = matcher(logits, boxes, targets)
    for image, (query_idx, target_idx) in enumerate(together):
        alone_query, alone_target = matcher(logits[image:image + 1], boxes[image:image + 1],
                                            targets[image:image + 1])[0]
        assert torch.equal(query_idx, alone_query) and torch.equal(target_idx, alone_target)
        assert len(query_idx) == len(targets[image]["labels"])
        assert len(set(query_idx.tolist())) == len(query_idx)


def test_images_without_targets_give_empty_indices():
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    indices = HungarianMatcher()(torch.randn(2, 5, 3), torch.rand(2, 5, 4), targets)
    for query_idx, target_idx in indices:
        assert query_idx.shape == target_idx.shape == (0,)
        assert query_idx.dtype == target_idx.dtype == torch.int64
