"""The debug overlay: colour mask blended over the RGB frame, the salient region's contour,
boxes and labels (no ROS)."""
from __future__ import annotations

import cv2
import numpy as np

from ..runtime import Detections, palette

SALIENCY_CONTOUR = (255, 220, 0)  # yellow: apart from the class palette's mask colours
SALIENT_FROM = 128  # the contour of saliency >= 0.5


def draw_overlay(rgb: np.ndarray, detections: Detections | None, class_names: list[str],
                 color_map: np.ndarray | None, alpha: float, show_mask: bool,
                 show_labels: bool, track_ids: list[str] | None = None,
                 saliency: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> a new annotated (H, W, 3) uint8 RGB image; labels start with
    ``#<track id>`` for tracked detections; ``saliency`` (H, W) uint8 0..255 adds the
    contour of its salient (>= 0.5) regions."""
    image = np.ascontiguousarray(rgb).copy()
    if show_mask and color_map is not None and alpha > 0:
        labelled = color_map.any(axis=2)  # class 0 (black) stays unblended
        blend = cv2.addWeighted(image, 1 - alpha, color_map, alpha, 0)
        image[labelled] = blend[labelled]
    thickness = max(1, round(min(image.shape[:2]) / 360))
    if saliency is not None:
        draw_saliency_contour(image, saliency, thickness)
    if detections is None:
        return image
    colours = palette(len(class_names) + 1)[1:]
    track_ids = track_ids or [""] * len(detections.scores)
    for box, score, label, track in zip(detections.boxes, detections.scores, detections.labels,
                                        track_ids, strict=True):
        colour = tuple(int(c) for c in colours[label % len(colours)])
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
        if show_labels:
            name = class_names[label] if label < len(class_names) else label
            text = f"{f'#{track} ' if track else ''}{name} {score:.2f}"
            cv2.putText(image, text, (x0, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness, colour, thickness, cv2.LINE_AA)
    return image


def draw_saliency_contour(image: np.ndarray, saliency: np.ndarray, thickness: int = 1) -> None:
    """Draw, in place on RGB ``image``, the outline of the regions where ``saliency`` (uint8
    0..255, same size) is at least 0.5."""
    contours, _ = cv2.findContours((saliency >= SALIENT_FROM).astype(np.uint8),
                                   cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, SALIENCY_CONTOUR, thickness)
