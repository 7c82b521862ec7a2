"""Readers of the RGB-T salient object detection benchmarks VT821, VT1000 and VT5000.

All three are published as three parallel folders of one image per frame, matched by file
stem: ``RGB/`` (visible, .jpg), ``T/`` (thermal, .jpg, grey stored as three equal channels)
and ``GT/`` (the salient-object mask, .png, 0 / 255). VT5000 has two splits, ``Train/`` and
``Test/`` (2,500 pairs each; the paper trains on Train and tests on the rest); VT821 and
VT1000 are test sets with the three folders at the top. The pairs are registered, so
``homography`` is None.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .pair_folder import read_image, read_ir, read_rgb
from .sample import Sample

VT_LAYOUT = ("<root>/[<split>/]RGB/<stem>.jpg, <root>/[<split>/]T/<stem>.jpg, "
             "<root>/[<split>/]GT/<stem>.png (VT5000: split Train or Test; VT821, VT1000: "
             "no split folder)")
IMAGE_SUFFIXES = (".jpg", ".png", ".bmp")
# A GT pixel is salient from half its range up (the masks are 0 / 255, JPEG-free PNGs).
SALIENT_FROM = 128


class VTSODDataset:
    """VT821 / VT1000 / VT5000: RGB + thermal + binary saliency ground truth.

    Args:
        root: the dataset folder (`VT_LAYOUT`).
        split: VT5000's "Train" or "Test" (case as on disk, or lower case); ignored where
            ``root`` holds RGB/, T/ and GT/ itself (VT821, VT1000).
    """

    detection_classes: tuple[str, ...] = ()
    segmentation_classes: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "Test") -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"VT dataset folder '{root}' does not exist; expected "
                                    f"layout: {VT_LAYOUT}")
        self.folder = root if (root / "RGB").is_dir() else _split_folder(root, split)
        self.rgb_dir, self.ir_dir, self.gt_dir = (self.folder / name for name in
                                                  ("RGB", "T", "GT"))
        for folder in (self.ir_dir, self.gt_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"VT folder '{folder}' does not exist; expected "
                                        f"layout: {VT_LAYOUT}")
        self.rgb_files = sorted(p for p in self.rgb_dir.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.rgb_files:
            raise FileNotFoundError(f"no images in '{self.rgb_dir}'; expected layout: "
                                    f"{VT_LAYOUT}")
        self.name = f"vt({self.folder})"

    def __len__(self) -> int:
        return len(self.rgb_files)

    def __getitem__(self, index: int) -> Sample:
        rgb_path = self.rgb_files[index]
        stem = rgb_path.stem
        gt = read_image(_partner(self.gt_dir, stem), cv2.IMREAD_GRAYSCALE)
        return Sample(rgb=read_rgb(rgb_path), ir=read_ir(_partner(self.ir_dir, stem)),
                      saliency=(gt >= SALIENT_FROM).astype(np.uint8), name=stem)


def _split_folder(root: Path, split: str) -> Path:
    """``root/<split>``, matching the case on disk (VT5000 spells Train and Test)."""
    for candidate in (split, split.capitalize(), split.lower()):
        if (root / candidate / "RGB").is_dir():
            return root / candidate
    raise FileNotFoundError(f"no RGB/ folder in '{root}' or '{root / split}'; expected layout: "
                            f"{VT_LAYOUT}")


def _partner(folder: Path, stem: str) -> Path:
    """The file of ``stem`` in ``folder``, whichever image suffix it has."""
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"'{folder}' has no image named '{stem}' (looked for "
                            f"{', '.join(IMAGE_SUFFIXES)}); expected layout: {VT_LAYOUT}")
