"""Readers of the published RGB-IR dataset layouts, each a sequence of `Sample`.

Every reader has ``name``, ``detection_classes`` and ``segmentation_classes`` (the
class lists its ground truth uses; empty when it has none). Annotations are read
up front where one file holds them all (M3FD), images on access. All three
datasets are registered (co-located cameras), so ``homography`` is None.
"""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from .pair_folder import PairFolderDataset, read_image, read_ir, read_rgb
from .sample import M3FD_CLASSES, MFNET_CLASSES, Sample
from .synthetic import SyntheticDataset
from .vt_sod import VTSODDataset

M3FD_LAYOUT = ("<root>/vi/[split_dir/]<file_name> (RGB), <root>/ir/[split_dir/]<file_name> "
               "(IR), a COCO JSON (default <root>/annotations.json)")
LLVIP_LAYOUT = ("<root>/visible/<split>/*.jpg, <root>/infrared/<split>/*.jpg, "
                "<root>/Annotations/<stem>.xml (VOC)")
MFNET_LAYOUT = ("<root>/images/<name>.png (4 channels: RGB + thermal), "
                "<root>/labels/<name>.png (class ids 0..8), <root>/<split>.txt (names)")


class M3FDDataset:
    """M3FD detection in COCO form; categories map to `M3FD_CLASSES` by name.

    Args:
        root: the dataset folder (layout in `M3FD_LAYOUT`).
        annotation: the COCO JSON, relative to ``root`` or absolute.
        split_dir: an optional sub-folder of vi/ and ir/ holding this split's images.

    Crowd annotations (``iscrowd`` 1) and boxes without area are skipped.
    """

    detection_classes = M3FD_CLASSES
    segmentation_classes: tuple[str, ...] = ()

    def __init__(self, root: str | Path, annotation: str | Path = "annotations.json",
                 split_dir: str = "") -> None:
        root = _folder(Path(root), "M3FD root", M3FD_LAYOUT)
        self.rgb_dir = _folder(root / "vi" / split_dir, "M3FD RGB", M3FD_LAYOUT)
        self.ir_dir = _folder(root / "ir" / split_dir, "M3FD IR", M3FD_LAYOUT)
        path = root / annotation  # an absolute annotation path replaces root
        coco = _read_coco(path)
        class_of = _category_classes(coco["categories"], path)
        boxes: dict[int, list] = {image["id"]: [] for image in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            if not ann.get("iscrowd", 0) and w > 0 and h > 0:
                boxes[ann["image_id"]].append((x, y, x + w, y + h, class_of[ann["category_id"]]))
        self.items = [(image["file_name"], np.array(boxes[image["id"]], np.float64).reshape(-1, 5))
                      for image in coco["images"]]
        self.name = f"m3fd({root})"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        file_name, boxes = self.items[index]
        return Sample(rgb=read_rgb(self.rgb_dir / file_name),
                      ir=read_ir(self.ir_dir / file_name), boxes=boxes[:, :4],
                      labels=boxes[:, 4], name=Path(file_name).stem)


class LLVIPDataset:
    """LLVIP pedestrian detection: VOC "person" objects become People (id 0).

    Boxes are the XML's xmin, ymin, xmax, ymax as they are.
    """

    detection_classes = M3FD_CLASSES[:1]
    segmentation_classes: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "test") -> None:
        root = _folder(Path(root), "LLVIP root", LLVIP_LAYOUT)
        self.rgb_dir = _folder(root / "visible" / split, "LLVIP visible", LLVIP_LAYOUT)
        self.ir_dir = _folder(root / "infrared" / split, "LLVIP infrared", LLVIP_LAYOUT)
        self.xml_dir = _folder(root / "Annotations", "LLVIP annotation", LLVIP_LAYOUT)
        self.stems = sorted(path.stem for path in self.rgb_dir.glob("*.jpg"))
        if not self.stems:
            raise FileNotFoundError(f"no *.jpg images in '{self.rgb_dir}'; expected layout: "
                                    f"{LLVIP_LAYOUT}")
        self.name = f"llvip({root}, {split})"

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> Sample:
        stem = self.stems[index]
        boxes, labels = _read_voc(self.xml_dir / f"{stem}.xml")
        return Sample(rgb=read_rgb(self.rgb_dir / f"{stem}.jpg"),
                      ir=read_ir(self.ir_dir / f"{stem}.jpg"), boxes=boxes, labels=labels,
                      name=stem)


class MFNetDataset:
    """MFNet segmentation: 4-channel PNGs (OpenCV reads B, G, R, thermal) and label maps."""

    detection_classes: tuple[str, ...] = ()
    segmentation_classes = MFNET_CLASSES

    def __init__(self, root: str | Path, split: str = "test") -> None:
        root = _folder(Path(root), "MFNet root", MFNET_LAYOUT)
        self.image_dir = _folder(root / "images", "MFNet image", MFNET_LAYOUT)
        self.label_dir = _folder(root / "labels", "MFNet label", MFNET_LAYOUT)
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"MFNet split list '{split_file}' does not exist; expected "
                                    f"layout: {MFNET_LAYOUT}")
        self.names = [line.strip() for line in split_file.read_text().splitlines()
                      if line.strip()]
        self.name = f"mfnet({root}, {split})"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image = read_image(self.image_dir / f"{name}.png", cv2.IMREAD_UNCHANGED)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise ValueError(f"MFNet image '{self.image_dir / name}.png' must be 8-bit with 4 "
                             f"channels (RGB + thermal), got {image.dtype} {image.shape}")
        return Sample(rgb=np.ascontiguousarray(image[..., 2::-1]),
                      ir=np.ascontiguousarray(image[..., 3]),
                      mask=_read_label(self.label_dir / f"{name}.png"), name=name)


def _synthetic(root: str | Path | None, **kwargs) -> SyntheticDataset:
    return SyntheticDataset(**kwargs)  # generated, not read: no root


DATASETS: dict[str, Callable[..., object]] = {
    "m3fd": M3FDDataset, "llvip": LLVIPDataset, "mfnet": MFNetDataset,
    "folder": PairFolderDataset, "synthetic": _synthetic, "vt": VTSODDataset,
}


def open_dataset(kind: str, root: str | Path | None = None, **kwargs):
    """The dataset of one kind: "m3fd", "llvip", "mfnet", "folder" (read from ``root``;
    "folder" is any folder of image pairs without annotations, `FOLDER_LAYOUT`) or
    "synthetic" (``length``, ``seed``, ...; no root). ``kwargs`` go to its constructor."""
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset kind '{kind}'; use one of {', '.join(DATASETS)}")
    if root is None and kind != "synthetic":
        raise ValueError(f"dataset '{kind}' needs the root folder of its files")
    return DATASETS[kind](root, **kwargs)


def _folder(path: Path, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder '{path}' does not exist; expected layout: "
                                f"{layout}")
    return path


def _read_label(path: Path) -> np.ndarray:
    label = read_image(path, cv2.IMREAD_UNCHANGED)
    if label.ndim == 3 and (label == label[..., :1]).all():
        label = label[..., 0]
    if label.ndim != 2 or label.dtype != np.uint8 or label.max() >= len(MFNET_CLASSES):
        raise ValueError(f"label '{path}' must be a single-channel 8-bit map of class ids "
                         f"0..{len(MFNET_CLASSES) - 1}")
    return np.ascontiguousarray(label)


def _read_coco(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file '{path}' does not exist; expected layout: "
                                f"{M3FD_LAYOUT}")
    try:
        coco = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"annotation file '{path}' is not valid JSON: {exc}") from exc
    missing = [key for key in ("images", "annotations", "categories") if key not in coco]
    if missing:
        raise ValueError(f"annotation file '{path}' is not COCO detection JSON: no "
                         f"{', '.join(missing)}")
    return coco


def _category_classes(categories: list[dict], path: Path) -> dict[int, int]:
    """COCO category id -> our class id, matched by name (case-insensitive)."""
    ours = {name.lower(): index for index, name in enumerate(M3FD_CLASSES)}
    unknown = sorted(cat["name"] for cat in categories if cat["name"].lower() not in ours)
    if unknown:
        raise ValueError(f"annotation file '{path}' has unknown category name(s) {unknown}; "
                         f"expected {list(M3FD_CLASSES)}")
    return {cat["id"]: ours[cat["name"].lower()] for cat in categories}


def _read_voc(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """VOC XML -> boxes (N, 4) xyxy, labels (N,); only "person" (People) is known."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation '{path}' does not exist; expected layout: "
                                f"{LLVIP_LAYOUT}")
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        name = obj.findtext("name", "").strip()
        if name.lower() != "person":
            raise ValueError(f"annotation '{path}' has an object named '{name}'; LLVIP "
                             "labels only 'person'")
        box = obj.find("bndbox")
        boxes.append([float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")])
    return np.array(boxes, np.float32).reshape(-1, 4), np.zeros(len(boxes), np.int64)


def add_dataset_arguments(parser: argparse.ArgumentParser, default_length: int,
                          default_split: str) -> None:
    """The dataset options that `ivtuning train` and `ivtuning eval` share."""
    parser.add_argument("--data", required=True, choices=list(DATASETS), metavar="KIND",
                        help=f"dataset kind: {', '.join(DATASETS)} (folder: any folder of "
                             "RGB-IR image pairs, e.g. RoadScene, no annotations)")
    parser.add_argument("--root", help="dataset folder (not for synthetic)")
    parser.add_argument("--split", default=default_split,
                        help=f"llvip/mfnet split, vt (VT5000): Train or Test; folder: a "
                             f"sub-folder of both image folders, used where it exists "
                             f"(default: {default_split})")
    parser.add_argument("--length", type=int, default=default_length, metavar="N",
                        help=f"synthetic: number of scenes (default: {default_length})")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="synthetic: dataset seed (default: 0)")
    parser.add_argument("--conditions", default="day,night,fog",
                        help="synthetic: comma-separated conditions (default: all)")
    parser.add_argument("--scene-scale", type=float, default=1.0,
                        help="synthetic: camera resolution scale (1.0: 640x480 RGB, 640x512 "
                             "IR; 0.5 renders no more pixels than a 320-wide network sees)")


def dataset_from_arguments(args: argparse.Namespace):
    """`open_dataset` for the options `add_dataset_arguments` declares."""
    if args.data == "synthetic":
        scale = args.scene_scale
        return open_dataset("synthetic", length=args.length, seed=args.seed,
                            conditions=tuple(args.conditions.split(",")),
                            rgb_size=(round(480 * scale), round(640 * scale)),
                            ir_size=(round(512 * scale), round(640 * scale)))
    options = {"split": args.split} if args.data in ("llvip", "mfnet", "folder", "vt") else {}
    return open_dataset(args.data, args.root, **options)
