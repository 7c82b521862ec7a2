"""Box ops and DINO post-processing: hand-computed top-k, filtering, letterbox inverse,
segmentation crop/resize, and CUDA-graph capture where a GPU is present."""
import math

import pytest
import torch

from ivtuning_ros.model.box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    inverse_sigmoid,
)
from ivtuning_ros.model.postprocess import (
    Letterbox,
    boxes_to_original,
    filter_mask,
    letterbox_for,
    postprocess,
    segmentation_to_original,
    select_detections,
)

# 1280x720 camera into a 640x640 network input: scale 0.5, a 640x360 image at the top left,
# 280 rows of padding below it.
HD = letterbox_for(720, 1280, 640, 640)


# --- box ops -----------------------------------------------------------------------------------

def test_box_conversion_by_hand_and_round_trip():
    cxcywh = torch.tensor([[5.0, 5.0, 4.0, 2.0]])
    assert torch.equal(box_cxcywh_to_xyxy(cxcywh), torch.tensor([[3.0, 4.0, 7.0, 6.0]]))
    boxes = torch.rand(2, 7, 4)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)
    assert torch.allclose(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(boxes)), boxes, atol=1e-6)


def test_inverse_sigmoid():
    x = torch.linspace(0.05, 0.95, 19)
    assert torch.allclose(inverse_sigmoid(x).sigmoid(), x, atol=1e-6)
    ends = inverse_sigmoid(torch.tensor([-0.5, 0.0, 1.0, 1.5]))
    expected = [math.log(1e-5), math.log(1e-5), -math.log(1e-5), -math.log(1e-5)]
    assert torch.allclose(ends, torch.tensor(expected))


def test_box_iou_and_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    others = torch.tensor([
        [0.0, 0.0, 2.0, 2.0],  # identical
        [1.0, 1.0, 3.0, 3.0],  # inter 1, union 7, enclosing 9
        [10.0, 10.0, 11.0, 11.0],  # disjoint, far: union 5, enclosing 121
    ])
    iou, union = box_iou(a, others)
    assert iou.shape == union.shape == (1, 3)
    assert torch.allclose(iou, torch.tensor([[1.0, 1 / 7, 0.0]]))
    assert torch.allclose(union, torch.tensor([[4.0, 7.0, 5.0]]))
    giou = generalized_box_iou(a, others)
    assert torch.allclose(giou, torch.tensor([[1.0, 1 / 7 - 2 / 9, -116 / 121]]))
    assert generalized_box_iou(others, a).shape == (3, 1)


# --- detections --------------------------------------------------------------------------------

def crafted_outputs():
    """Two images, Q=3 queries, K=2 classes, distinct logits so the top-k order is unique."""
    logits = torch.tensor([
        [[0.0, 2.0], [1.0, -1.0], [3.0, -2.0]],
        [[-3.0, -2.0], [5.0, 4.0], [-1.0, 0.5]],
    ])
    boxes = torch.tensor([
        [[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.1, 0.1], [0.75, 0.5, 0.5, 0.25]],
        [[0.1, 0.2, 0.1, 0.2], [0.5, 0.5, 1.0, 1.0], [0.3, 0.3, 0.2, 0.2]],
    ])
    return logits, boxes


def test_select_detections_order_and_decomposition():
    logits, boxes = crafted_outputs()
    scores, labels, xyxy = select_detections(logits, boxes, num_select=4)
    # Image 0 flattened: [0, 2, 1, -1, 3, -2] -> top 4 at flat indices 4, 1, 2, 0.
    # Image 1 flattened: [-3, -2, 5, 4, -1, 0.5] -> top 4 at flat indices 2, 3, 5, 4.
    assert torch.allclose(scores, torch.tensor([[3.0, 2, 1, 0], [5, 4, 0.5, -1]]).sigmoid())
    assert torch.equal(labels, torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0]]))
    queries = torch.tensor([[2, 0, 1, 0], [1, 1, 2, 2]])
    for image in range(2):
        expected = box_cxcywh_to_xyxy(boxes[image, queries[image]])
        assert torch.equal(xyxy[image], expected)
    assert torch.allclose(xyxy[0, 0], torch.tensor([0.5, 0.375, 1.0, 0.625]))


def test_select_detections_caps_k():
    logits, boxes = crafted_outputs()
    scores, labels, xyxy = select_detections(logits, boxes, num_select=300)
    assert scores.shape == labels.shape == (2, 6)
    assert xyxy.shape == (2, 6, 4)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_filter_mask_threshold_classes_and_max_detections():
    scores = torch.tensor([[0.9, 0.8, 0.6, 0.4, 0.2]])
    labels = torch.tensor([[0, 1, 2, 1, 0]])
    allowed = torch.tensor([True, False, True])

    def keep(threshold, class_mask=None, max_detections=100):
        return filter_mask(scores, labels, threshold, class_mask, max_detections)[0].tolist()

    assert keep(0.5) == [True, True, True, False, False]
    assert keep(0.6) == [True, True, True, False, False]  # >= threshold
    assert keep(0.5, allowed) == [True, False, True, False, False]
    assert keep(0.0, max_detections=2) == [True, True, False, False, False]
    # The dropped class does not use up the budget: the two kept are 0 and 2.
    assert keep(0.0, allowed, max_detections=2) == [True, False, True, False, False]
    assert keep(0.0, allowed, max_detections=0) == [False] * 5


def test_filter_mask_tensor_threshold_changes_in_place():
    scores = torch.tensor([[0.9, 0.8, 0.6, 0.4, 0.2]])
    labels = torch.zeros(1, 5, dtype=torch.long)
    threshold = torch.tensor(0.7)
    assert filter_mask(scores, labels, threshold, None, 100).sum() == 2
    threshold.fill_(0.3)
    assert filter_mask(scores, labels, threshold, None, 100).sum() == 4


def test_postprocess_end_to_end():
    logits, boxes = crafted_outputs()
    allowed = torch.tensor([True, False])
    results = postprocess(logits, boxes, HD, num_select=4, score_threshold=0.5,
                          class_mask=allowed, max_detections=100)
    assert len(results) == 2
    # Image 0: top 4 are (q2, c0, s(3)), (q0, c1), (q1, c0, s(1)), (q0, c0, s(0) = 0.5).
    assert torch.equal(results[0]["labels"], torch.tensor([0, 0, 0]))
    assert torch.allclose(results[0]["scores"], torch.tensor([3.0, 1.0, 0.0]).sigmoid())
    # Query 2: xyxy (0.5, 0.375, 1.0, 0.625) of the 640x360 image region = (320, 135, 640,
    # 225) network pixels, i.e. the same fractions of the 1280x720 original (as mmdet rescales).
    assert torch.allclose(results[0]["boxes"][0], torch.tensor([640.0, 270.0, 1280.0, 450.0]))
    # Image 1: (q1, c0, s(5)) kept; (q1, c1) and (q2, c1) are class 1; (q2, c0) is below 0.5.
    assert torch.equal(results[1]["labels"], torch.tensor([0]))
    assert results[1]["boxes"].shape == (1, 4)


# --- letterbox ---------------------------------------------------------------------------------

def test_letterbox_for_non_square():
    assert HD == Letterbox(scale=0.5, orig_h=720, orig_w=1280, in_h=640, in_w=640)
    assert HD.valid_size == (360, 640)
    assert HD.valid_slices == (slice(0, 360), slice(0, 640))  # top left, padding below
    # 100x200 into 65x64: scale 0.32, a 32x64 image, all 33 rows of padding below it.
    odd = letterbox_for(100, 200, 65, 64)
    assert (odd.scale, odd.valid_slices) == (0.32, (slice(0, 32), slice(0, 64)))
    portrait = letterbox_for(1280, 720, 640, 640)
    assert (portrait.scale, portrait.valid_slices) == (0.5, (slice(0, 640), slice(0, 360)))
    assert letterbox_for(480, 640, 480, 640).valid_size == (480, 640)  # no padding
    with pytest.raises(ValueError):
        letterbox_for(0, 1280, 640, 640)


def test_boxes_to_original_by_hand():
    network_pixels = torch.tensor([
        [100.0, 45.0, 300.0, 225.0],
        [-10.0, -45.0, 650.0, 405.0],  # outside the image on every side: clipped
    ])
    # The head normalises boxes to the 640x360 image region, not to the 640x640 input
    # (pixel values whose fractions are exact in binary).
    original = boxes_to_original(network_pixels / torch.tensor([640.0, 360.0] * 2), HD)
    expected = torch.tensor([
        [200.0, 90.0, 600.0, 450.0],
        [0.0, 0.0, 1280.0, 720.0],  # unclipped: (-20, -90, 1300, 810)
    ])
    assert torch.equal(original, expected)
    assert torch.equal(HD.to_original(network_pixels[1]), torch.tensor([-20.0, -90, 1300, 810]))


@pytest.mark.parametrize("letterbox", [
    HD,
    letterbox_for(480, 640, 512, 512),
    letterbox_for(1080, 1920, 384, 512),
    letterbox_for(101, 77, 64, 96),
])
def test_letterbox_round_trip(letterbox):
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(3, 10, 2, 2, generator=generator)
    corners = corners * torch.tensor([letterbox.orig_w, letterbox.orig_h])
    boxes = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)  # valid xyxy
    network = letterbox.to_input(boxes)
    assert torch.allclose(letterbox.to_original(network), boxes, atol=1e-3)
    height, width = letterbox.valid_size
    normalised = network / torch.tensor([width, height] * 2)
    assert torch.allclose(boxes_to_original(normalised, letterbox), boxes, atol=1e-3)


# --- segmentation ------------------------------------------------------------------------------

@pytest.mark.parametrize("transpose", [False, True])
def test_segmentation_to_original_crops_padding(transpose):
    # 6x12 into 8x8: scale 2/3, a 4x8 image at the top with 4 rows of padding below.
    letterbox = letterbox_for(6, 12, 8, 8)
    logits = torch.zeros(2, 3, 8, 8)
    logits[:, 2, 4:] = 100.0  # padding: class 2, loud enough to bleed
    logits[:, 0, :4, :4] = 10.0  # valid left half: class 0
    logits[:, 1, :4, 4:] = 10.0  # valid right half: class 1
    # Output column j samples source column (j + 0.5) * 8 / 12 - 0.5: j <= 5 lies nearer 3.
    expected = torch.zeros(2, 6, 12, dtype=torch.long)
    expected[:, :, 6:] = 1
    if transpose:
        letterbox = letterbox_for(12, 6, 8, 8)
        logits, expected = logits.transpose(2, 3), expected.transpose(1, 2)
    classes = segmentation_to_original(logits, letterbox)
    assert classes.dtype == torch.int64
    assert torch.equal(classes, expected)


# --- CUDA graphs -------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_safe_functions_capture_and_replay():
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(2, 50, 4, device=device, generator=generator)
    boxes = torch.rand(2, 50, 4, device=device, generator=generator)
    seg_logits = torch.randn(2, 4, 640, 640, device=device, generator=generator)
    threshold = torch.tensor(0.5, device=device)
    allowed = torch.tensor([True, False, True, True], device=device)

    def step():
        scores, labels, xyxy = select_detections(logits, boxes, 30)
        keep = filter_mask(scores, labels, threshold, allowed, 10)
        return keep, boxes_to_original(xyxy, HD), segmentation_to_original(seg_logits, HD)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside the capture, as CUDA graphs require
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for value in (0.5, 0.2):
        threshold.fill_(value)
        graph.replay()
        for got, want in zip(captured, step(), strict=True):
            assert torch.equal(got, want)
