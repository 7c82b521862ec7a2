"""A folder of RGB-IR image pairs, without annotations, in the layouts public sets use.

The root holds one infrared folder and one visible folder; a pair is an IR and a visible
image with the same path below their folders, the extension aside (any format OpenCV
reads, any size, 8- or 16-bit IR). Folder names recognised, first match wins:

* RoadScene: ``cropinfrared/`` + ``crop_LR_visible/`` (the registered pairs);
* ``ir/``, ``infrared/``, ``thermal/``, ``lwir/`` or ``T/`` with ``vi/``, ``vis/``,
  ``visible/``, ``rgb/`` or ``RGB/`` (M3FD, LLVIP, VT5000 and most fusion sets);
  a ``<split>/`` sub-folder of both (LLVIP's ``train``/``test``) is used when present.

A path component named ``day``, ``night`` or ``fog`` (``ir/night/0001.png``) sets the
pair's condition, so results split by it; otherwise the condition is ``""``. The
cameras count as registered (``homography`` None): the engine scales IR onto the RGB
image, as the node's default ``registration: scale`` does.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .sample import M3FD_CLASSES, Sample

IR_FOLDERS = ("cropinfrared", "ir", "infrared", "thermal", "lwir", "T")
VISIBLE_FOLDERS = ("crop_LR_visible", "vi", "vis", "visible", "rgb", "RGB")
CONDITIONS = ("day", "night", "fog")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
FOLDER_LAYOUT = (f"<root>/<IR folder>/[<split>/]<name>.<ext> and <root>/<visible folder>/"
                 f"[<split>/]<name>.<ext>, IR folder one of {', '.join(IR_FOLDERS)}, visible "
                 f"folder one of {', '.join(VISIBLE_FOLDERS)}")


class PairFolderDataset:
    """Image pairs of a folder (layout in the module docstring), sorted by name (the
    relative path without extension); no ground truth."""

    detection_classes = M3FD_CLASSES  # what a detector run on it reports
    segmentation_classes: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "") -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"pair folder '{root}' does not exist; expected layout: "
                                    f"{FOLDER_LAYOUT}")
        self.ir_dir, self.rgb_dir = _pair_folders(root, split)
        ir_images, rgb_images = _images(self.ir_dir), _images(self.rgb_dir)
        self.names = sorted(set(ir_images) & set(rgb_images))
        if not self.names:
            raise FileNotFoundError(
                f"no pairs in '{root}': {len(ir_images)} images in '{self.ir_dir.name}/', "
                f"{len(rgb_images)} in '{self.rgb_dir.name}/', none with the same name in "
                f"both; expected layout: {FOLDER_LAYOUT}")
        self._paths = {name: (ir_images[name], rgb_images[name]) for name in self.names}
        self.unpaired = len(set(ir_images) ^ set(rgb_images))
        self.name = f"folder({root})"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        ir_path, rgb_path = self._paths[name]
        return Sample(rgb=read_rgb(rgb_path), ir=read_ir(ir_path), name=name,
                      condition=condition_of(name))


def _pair_folders(root: Path, split: str) -> tuple[Path, Path]:
    """(IR folder, visible folder) under ``root``, with the split sub-folder if both have it."""
    ir = next((root / n for n in IR_FOLDERS if (root / n).is_dir()), None)
    rgb = next((root / n for n in VISIBLE_FOLDERS if (root / n).is_dir()), None)
    if ir is None or rgb is None:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        missing = "infrared" if ir is None else "visible"
        raise FileNotFoundError(f"'{root}' has no {missing} image folder (it has: "
                                f"{', '.join(present) or 'no folders'}); expected layout: "
                                f"{FOLDER_LAYOUT}")
    if split and (ir / split).is_dir() and (rgb / split).is_dir():
        return ir / split, rgb / split
    return ir, rgb


def _images(folder: Path) -> dict[str, Path]:
    """Pair name (relative path without extension, '/'-separated) -> image path."""
    return {path.relative_to(folder).with_suffix("").as_posix(): path
            for path in sorted(folder.rglob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()}


def condition_of(name: str) -> str:
    """The condition a pair's path names (``night/0001`` -> night), else ``""``."""
    return next((part for part in Path(name).parts[:-1] if part in CONDITIONS), "")


def read_image(path: Path, flags: int) -> np.ndarray:
    """OpenCV's read of ``path``, with an error that names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' does not exist")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"image '{path}' cannot be decoded")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """A colour image as uint8 RGB (grey images become three equal channels)."""
    image = read_image(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_ir(path: Path) -> np.ndarray:
    """A grey IR image as stored (uint8 or uint16), 2-D: grey JPGs decode to 3 equal channels."""
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"IR image '{path}' must be 8- or 16-bit, got {image.dtype}")
    return np.ascontiguousarray(image[..., 0] if image.ndim == 3 else image)
