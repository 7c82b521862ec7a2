"""Dataset readers on tiny copies of the published layouts, written with OpenCV."""
import json

import cv2
import numpy as np
import pytest

from ivtuning_ros.data import (
    LLVIPDataset,
    M3FDDataset,
    MFNetDataset,
    Sample,
    SyntheticDataset,
    open_dataset,
)

RED_RGB = (200, 30, 40)


def flat_rgb(height, width, rgb=RED_RGB):
    return np.full((height, width, 3), rgb, np.uint8)


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_grey(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@pytest.fixture
def m3fd(tmp_path):
    """Two images; categories in another order, with other ids and case than ours."""
    ramp = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 20)
    for name in ("00001.png", "00002.png"):
        write_rgb(tmp_path / "vi" / name, flat_rgb(40, 50))
        write_grey(tmp_path / "ir" / name, ramp)
    coco = {
        "images": [{"id": 7, "file_name": "00001.png"}, {"id": 9, "file_name": "00002.png"}],
        "categories": [{"id": 1, "name": "truck"}, {"id": 2, "name": "People"},
                       {"id": 5, "name": "CAR"}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [10, 5, 20, 8], "category_id": 2, "iscrowd": 0},
            {"id": 2, "image_id": 7, "bbox": [0, 0, 4.5, 3], "category_id": 1, "iscrowd": 0},
            {"id": 3, "image_id": 9, "bbox": [1, 2, 3, 4], "category_id": 5, "iscrowd": 0},
            {"id": 4, "image_id": 9, "bbox": [1, 2, 3, 4], "category_id": 5, "iscrowd": 1},
        ],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return tmp_path, coco, ramp


def test_m3fd_boxes_labels_by_name_and_16_bit_ir(m3fd):
    root, _, ramp = m3fd
    dataset = M3FDDataset(root)
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert isinstance(first, Sample) and first.name == "00001"
    np.testing.assert_allclose(first.boxes, [[10, 5, 30, 13], [0, 0, 4.5, 3]])
    np.testing.assert_array_equal(first.labels, [0, 5])  # People, Truck
    np.testing.assert_array_equal(second.labels, [1])  # the crowd box is skipped
    assert first.rgb.dtype == np.uint8 and tuple(first.rgb[0, 0]) == RED_RGB
    assert first.ir.dtype == np.uint16 and first.ir.ndim == 2
    np.testing.assert_array_equal(first.ir, ramp)
    assert first.homography is None and first.mask is None


def test_m3fd_absolute_annotation_path_and_split_dir(m3fd, tmp_path):
    root, coco, _ = m3fd
    for folder in ("vi", "ir"):
        (root / folder / "test").mkdir()
        for name in ("00001.png", "00002.png"):
            (root / folder / name).rename(root / folder / "test" / name)
    annotation = tmp_path / "elsewhere.json"
    annotation.write_text(json.dumps(coco))
    assert len(M3FDDataset(root, annotation=annotation, split_dir="test")[1].boxes) == 1


def test_m3fd_unknown_category_name(m3fd):
    root, coco, _ = m3fd
    coco["categories"].append({"id": 8, "name": "Tram"})
    (root / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="Tram"):
        M3FDDataset(root)


def test_m3fd_missing_folder_and_file(m3fd):
    root, _, _ = m3fd
    with pytest.raises(FileNotFoundError, match="does not exist"):
        M3FDDataset(root, annotation="missing.json")
    (root / "ir" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png"):
        M3FDDataset(root)[1]
    for path in (root / "ir").iterdir():
        path.unlink()
    (root / "ir").rmdir()
    with pytest.raises(FileNotFoundError, match=r"M3FD IR folder .*ir.*expected layout"):
        M3FDDataset(root)


VOC = """<annotation><filename>{stem}.jpg</filename>
<object><name>person</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>30</ymax>
</bndbox></object>
<object><name>person</name><bndbox><xmin>25</xmin><ymin>1</ymin><xmax>40</xmax><ymax>33</ymax>
</bndbox></object></annotation>"""


@pytest.fixture
def llvip(tmp_path):
    for stem in ("010001", "010002"):
        write_rgb(tmp_path / "visible" / "test" / f"{stem}.jpg", flat_rgb(36, 48))
        write_rgb(tmp_path / "infrared" / "test" / f"{stem}.jpg", flat_rgb(36, 48, (90,) * 3))
        (tmp_path / "Annotations").mkdir(exist_ok=True)
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(VOC.format(stem=stem))
    return tmp_path


def test_llvip_reads_voc_people_and_grey_ir(llvip):
    dataset = LLVIPDataset(llvip)
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample.name == "010002"
    np.testing.assert_allclose(sample.boxes, [[3, 4, 20, 30], [25, 1, 40, 33]])
    np.testing.assert_array_equal(sample.labels, [0, 0])
    assert sample.ir.shape == (36, 48) and sample.ir.dtype == np.uint8
    assert abs(int(sample.ir.mean()) - 90) <= 2  # JPEG is lossy
    assert np.abs(sample.rgb.mean((0, 1)) - RED_RGB).max() < 4  # RGB order, not BGR


def test_llvip_errors(llvip):
    with pytest.raises(FileNotFoundError, match=r"visible folder .*train.*expected layout"):
        LLVIPDataset(llvip, split="train")
    (llvip / "Annotations" / "010001.xml").write_text(
        VOC.format(stem="010001").replace("person", "dog", 1))
    with pytest.raises(ValueError, match="dog"):
        LLVIPDataset(llvip)[0]


@pytest.fixture
def mfnet(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    thermal = rng.integers(0, 256, (2, 24, 32), dtype=np.uint8)
    labels = rng.integers(0, 9, (2, 24, 32), dtype=np.uint8)
    for i, name in enumerate(("00001D", "00002N")):
        bgra = np.dstack([rgb[i][..., ::-1], thermal[i]])
        write_grey(tmp_path / "images" / f"{name}.png", bgra)
        write_grey(tmp_path / "labels" / f"{name}.png", labels[i])
    (tmp_path / "test.txt").write_text("00001D\n00002N\n\n")
    return tmp_path, rgb, thermal, labels


def test_mfnet_splits_four_channels_into_rgb_and_thermal(mfnet):
    root, rgb, thermal, labels = mfnet
    dataset = MFNetDataset(root)
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample.name == "00002N"
    np.testing.assert_array_equal(sample.rgb, rgb[1])
    np.testing.assert_array_equal(sample.ir, thermal[1])
    np.testing.assert_array_equal(sample.mask, labels[1])
    assert sample.boxes.shape == (0, 4) and sample.labels.shape == (0,)


def test_mfnet_errors(mfnet):
    root = mfnet[0]
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        MFNetDataset(root, split="val")
    write_grey(root / "images" / "00001D.png", np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="4"):
        MFNetDataset(root)[0]


def test_open_dataset(mfnet):
    assert isinstance(open_dataset("mfnet", mfnet[0]), MFNetDataset)
    synthetic = open_dataset("synthetic", None, length=2, seed=1)
    assert isinstance(synthetic, SyntheticDataset) and len(synthetic) == 2
    with pytest.raises(ValueError, match="unknown dataset kind"):
        open_dataset("kitti", mfnet[0])
    with pytest.raises(ValueError, match="root"):
        open_dataset("llvip")
