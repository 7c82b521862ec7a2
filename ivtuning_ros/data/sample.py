"""The one record every dataset yields, and the class lists of the project's configs."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Detection ids 0..5, in the order of M3FD and of the detection configs.
M3FD_CLASSES = ("People", "Car", "Bus", "Motorcycle", "Lamp", "Truck")
# Segmentation ids 0..8, in the order of MFNet and of the segmentation configs.
MFNET_CLASSES = ("unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail",
                 "color_cone", "bump")


@dataclass
class Sample:
    """One RGB + IR frame with its ground truth.

    Attributes:
        rgb: uint8 (H, W, 3), RGB order.
        ir: (h, w) uint8, uint16 (raw counts) or float32 (temperature), at the IR
            camera's own size; None for an RGB-only frame.
        homography: (3, 3) float64 IR -> RGB pixel mapping, x_rgb ~ H @ [x_ir, y_ir, 1]
            (OpenCV's convention, as `cv2.warpPerspective(ir, H, (W, H))` uses it);
            None for co-located cameras with the same field of view.
        boxes: float32 (N, 4) xyxy in RGB pixels; a box of pixel columns x0..x1
            inclusive spans [x0, x1 + 1].
        labels: int64 (N,) detection class ids (`M3FD_CLASSES`).
        mask: uint8 (H, W) segmentation class ids (`MFNET_CLASSES`), or None.
        saliency: uint8 (H, W) salient-object ground truth, 1 salient and 0 not, or None.
        name: an identifier of the frame (file stem for real data).
        condition: "day", "night" or "fog" for synthetic frames, "" for real data.
    """

    rgb: np.ndarray
    ir: np.ndarray | None = None
    homography: np.ndarray | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mask: np.ndarray | None = None
    saliency: np.ndarray | None = None
    name: str = ""
    condition: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"sample '{self.name}' has {len(self.boxes)} boxes but "
                             f"{len(self.labels)} labels")
