"""Synthetic RGB-IR scenes: deterministic, consistent ground truth, warm people in IR,
night darkens only the RGB, and the homography really maps IR onto RGB."""
import cv2
import numpy as np
import pytest

from ivtuning_ros.data import M3FD_CLASSES, SyntheticDataset, make_scene
from ivtuning_ros.data.synthetic import IR_COUNTS_OFFSET, IR_COUNTS_PER_DEGREE

SEEDS = range(8)
# Mask classes (MFNet ids) and the detection labels (M3FD ids) whose boxes must hold them.
MASK_IN_BOXES = {2: (0,), 1: (1, 2, 5), 3: (3,)}


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(seed, ("day", "night", "fog")[seed % 3]) for seed in SEEDS]


def box_union(sample, labels, pad=0):
    height, width = sample.rgb.shape[:2]
    union = np.zeros((height, width), bool)
    for (x0, y0, x1, y1), label in zip(sample.boxes.astype(int), sample.labels, strict=True):
        if label in labels:
            union[max(y0 - pad, 0):y1 + pad, max(x0 - pad, 0):x1 + pad] = True
    return union


def test_same_seed_same_arrays_other_seed_differs():
    first, again, other = make_scene(4, "fog"), make_scene(4, "fog"), make_scene(5, "fog")
    for name in ("rgb", "ir", "homography", "boxes", "labels", "mask"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.rgb, other.rgb)
    assert not np.array_equal(first.ir, other.ir)
    np.testing.assert_array_equal(first.homography, other.homography)  # one fixed rig


def test_shapes_and_dtypes():
    sample = make_scene(1, "day", rgb_size=(240, 320), ir_size=(200, 256))
    assert sample.rgb.shape == (240, 320, 3) and sample.rgb.dtype == np.uint8
    assert sample.ir.shape == (200, 256) and sample.ir.dtype == np.uint16
    assert sample.mask.shape == (240, 320) and sample.mask.dtype == np.uint8
    assert sample.homography.shape == (3, 3) and sample.homography.dtype == np.float64
    assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int64
    assert sample.condition == "day"


def test_boxes_inside_image_big_enough_labels_in_range(scenes):
    assert sum(len(sample.boxes) for sample in scenes) >= 2 * len(scenes)
    for sample in scenes:
        height, width = sample.rgb.shape[:2]
        x0, y0, x1, y1 = sample.boxes.T
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
        assert (np.minimum(x1 - x0, y1 - y0) >= 12).all()
        assert ((sample.labels >= 0) & (sample.labels < len(M3FD_CLASSES))).all()
        assert sample.mask.max() <= 8


def test_mask_classes_lie_in_their_boxes_and_fill_them(scenes):
    for sample in scenes:
        for mask_class, labels in MASK_IN_BOXES.items():
            outside = (sample.mask == mask_class) & ~box_union(sample, labels)
            assert not outside.any(), f"{sample.name}: class {mask_class} outside its boxes"
        for (x0, y0, x1, y1), label in zip(sample.boxes.astype(int), sample.labels,
                                           strict=True):
            if label == 0:  # a person fills a good part of its box despite occlusion
                assert (sample.mask[y0:y1, x0:x1] == 2).mean() > 0.25


def test_people_are_warm_in_ir():
    people = 0
    for seed in range(12):
        sample = make_scene(seed)
        ir = sample.ir.astype(np.float64)
        inverse = np.linalg.inv(sample.homography)
        for (x0, y0, x1, y1), label in zip(sample.boxes, sample.labels, strict=True):
            corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]]) @ inverse.T
            corners = corners[:, :2] / corners[:, 2:]
            (u0, v0), (u1, v1) = np.floor(corners.min(0)), np.ceil(corners.max(0))
            if label != 0 or u0 < 0 or v0 < 0 or u1 > ir.shape[1] or v1 > ir.shape[0]:
                continue  # only people the IR camera sees whole
            people += 1
            assert ir[int(v0):int(v1), int(u0):int(u1)].mean() > np.median(ir) \
                + 3 * IR_COUNTS_PER_DEGREE
    assert people >= 3


def test_night_darkens_rgb_only():
    for seed in (2, 3):
        day, night = make_scene(seed, "day"), make_scene(seed, "night")
        assert night.rgb.mean() < 0.3 * day.rgb.mean()
        assert abs(night.ir.astype(float).mean() - day.ir.astype(float).mean()) < 50
        assert abs(night.ir.astype(float).std() - day.ir.astype(float).std()) < 50
        np.testing.assert_array_equal(night.boxes, day.boxes)
        np.testing.assert_array_equal(night.mask, day.mask)


def test_fog_lowers_rgb_contrast():
    day, fog = make_scene(6, "day"), make_scene(6, "fog")
    assert fog.rgb.std() < 0.8 * day.rgb.std()
    assert fog.rgb.mean() > day.rgb.mean()


def test_homography_puts_hot_ir_pixels_on_objects(scenes):
    hot_count = IR_COUNTS_OFFSET + 30.0 * IR_COUNTS_PER_DEGREE  # 30 deg C: skin, engines
    hot_total = 0
    for sample in scenes:
        height, width = sample.rgb.shape[:2]
        warped = cv2.warpPerspective(sample.ir, sample.homography, (width, height))
        hot = warped > hot_count
        on_objects = box_union(sample, range(len(M3FD_CLASSES)), pad=3)
        hot_total += hot.sum()
        assert (hot & on_objects).sum() >= 0.99 * hot.sum(), sample.name
    assert hot_total > 100


def test_unknown_condition_is_rejected():
    with pytest.raises(ValueError, match="condition"):
        make_scene(0, "rain")


def test_dataset_cycles_conditions_deterministically():
    dataset = SyntheticDataset(4, seed=3, rgb_size=(96, 128), ir_size=(80, 100))
    again = SyntheticDataset(4, seed=3, rgb_size=(96, 128), ir_size=(80, 100))
    other = SyntheticDataset(4, seed=4, rgb_size=(96, 128), ir_size=(80, 100))
    assert len(dataset) == 4
    assert [sample.condition for sample in dataset] == ["day", "night", "fog", "day"]
    np.testing.assert_array_equal(dataset[2].rgb, again[2].rgb)
    assert not np.array_equal(dataset[2].rgb, other[2].rgb)
    assert dataset[-1].name == dataset[3].name
    with pytest.raises(IndexError):
        dataset[4]
