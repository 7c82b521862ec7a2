"""Deterministic synthetic RGB-IR street scenes with exact ground truth (numpy + OpenCV).

A scene is drawn once, in RGB geometry, into three layers: colour, temperature
(deg C) and an entity id per pixel. Every entity (sky, road, curb, one object...)
has a segmentation class, a depth and a texture strength, so the mask, the fog's
depth map and the texture follow from the id layer and match what is drawn.

Camera model: flat ground, camera 1.5 m above it, horizon at row ``hz``: at row y
the ground is ``(y - hz) / 1.5`` pixels per metre wide and ``1.5 * W / (y - hz)``
metres away. Objects are drawn far to near, so nearer ones occlude.

IR: the temperature layer warped into the IR camera's geometry by the rig's
homography, slightly blurred, as raw 16-bit counts ``7000 + 100 * T`` plus sensor
noise. The rig is fixed (the homography depends on the two image sizes only): the
IR camera sees 88 % of the RGB field of view, offset and mildly tilted.

Salient object (the SOD ground truth): the nearest person or vehicle (M3FD People, Car,
Bus, Motorcycle, Truck; not Lamp), nearest meaning the largest ground contact row, i.e. the
smallest distance; its visible pixels (after occlusion) are 1, the rest 0; all 0 when the
scene has none.

Conditions change the RGB only (fog also attenuates the IR slightly): one seed
gives the same geometry, ground truth and, except in fog, IR in every condition.

The street and its layers are drawn by `synthetic_street`, the objects on it by
`synthetic_objects`; this module renders the cameras and the conditions.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from .sample import M3FD_CLASSES, MFNET_CLASSES, Sample
from .synthetic_objects import SceneObject, place_objects
from .synthetic_street import (
    Canvas,
    Street,
    depth_map,
    draw_background,
    ground_warmth,
    random_street,
)

CONDITIONS = ("day", "night", "fog")
IR_COUNTS_OFFSET = 7000.0
IR_COUNTS_PER_DEGREE = 100.0
# Corner offsets of the IR quad in the RGB frame, in quad sizes: a mild perspective.
# The salient object's classes (M3FD ids): people and vehicles, not street lamps.
SALIENT_LABELS = tuple(M3FD_CLASSES.index(name) for name in
                       ("People", "Car", "Bus", "Motorcycle", "Truck"))
RIG_TILT = np.array([[0.008, -0.006], [-0.004, 0.005], [0.006, 0.004], [-0.007, -0.005]])


def make_scene(seed: int, condition: str = "day", rgb_size: tuple[int, int] = (480, 640),
               ir_size: tuple[int, int] = (512, 640)) -> Sample:
    """One synthetic scene; identical arrays for identical arguments.

    Args:
        seed: the scene (geometry, objects, IR noise).
        condition: "day", "night" (dark, noisy RGB with light sources) or "fog"
            (RGB hazed by depth).
        rgb_size, ir_size: (height, width) of the two cameras.
    Returns:
        A `Sample`: IR uint16 counts (``7000 + 100 * deg C``) at ``ir_size``,
        ``homography`` IR -> RGB, boxes/labels in M3FD ids, mask in MFNet ids,
        saliency of the nearest person or vehicle (module docstring).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
    if min(*rgb_size, *ir_size) < 16:
        raise ValueError(f"image sizes must be at least 16 pixels, got rgb {rgb_size}, "
                         f"ir {ir_size}")
    rng = np.random.default_rng(seed)
    homography = rig_homography(rgb_size, ir_size)
    street = random_street(rng, *rgb_size)
    canvas = Canvas(*rgb_size)
    lights = draw_background(canvas, street, rng)
    objects = place_objects(rng, street)
    idents = draw_objects(canvas, street, objects, lights)
    # Conditions draw from their own stream: the scene above is the same in all of them.
    weather = np.random.default_rng([seed, CONDITIONS.index(condition)])
    rgb, ir = render_cameras(canvas, street, lights, rng, weather, condition, homography,
                             ir_size)
    labelled = [obj for obj in objects if obj.label is not None]
    return Sample(
        rgb=rgb,
        ir=ir,
        homography=homography,
        boxes=np.array([obj.box(*rgb_size) for obj in labelled], np.float32).reshape(-1, 4),
        labels=np.array([obj.label for obj in labelled], np.int64),
        mask=canvas.per_pixel("mask_class").astype(np.uint8),
        saliency=_saliency(canvas, objects, idents),
        name=f"synthetic_{seed}_{condition}",
        condition=condition,
    )


def _saliency(canvas: Canvas, objects: Sequence[SceneObject], idents: list[int]) -> np.ndarray:
    """uint8 (H, W): 1 on the visible pixels of the nearest person or vehicle (the lowest
    ground contact; the first drawn on a tie), 0 elsewhere."""
    candidates = [(obj.ground_y, ident) for obj, ident in zip(objects, idents, strict=True)
                  if obj.label in SALIENT_LABELS]
    if not candidates:
        return np.zeros_like(canvas.ident)
    _, ident = max(candidates, key=lambda candidate: candidate[0])
    return (canvas.ident == ident).astype(np.uint8)


class SyntheticDataset:
    """``length`` synthetic scenes; scene i has condition ``conditions[i % len(conditions)]``
    and a seed derived from (seed, i), so the dataset is the same on every run."""

    def __init__(self, length: int, seed: int = 0, conditions: Sequence[str] = CONDITIONS,
                 rgb_size: tuple[int, int] = (480, 640),
                 ir_size: tuple[int, int] = (512, 640)) -> None:
        if length < 1:
            raise ValueError(f"a synthetic dataset needs length >= 1, got {length}")
        unknown = sorted(set(conditions) - set(CONDITIONS))
        if unknown or not conditions:
            raise ValueError(f"conditions must be a non-empty subset of {CONDITIONS}, "
                             f"got {tuple(conditions)}")
        self.length, self.seed, self.conditions = length, seed, tuple(conditions)
        self.rgb_size, self.ir_size = rgb_size, ir_size
        self.name = f"synthetic(seed={seed})"
        self.detection_classes = M3FD_CLASSES
        self.segmentation_classes = MFNET_CLASSES

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if not -self.length <= index < self.length:
            raise IndexError(f"scene {index} out of range for {self.length} scenes")
        index %= self.length
        scene_seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])
        condition = self.conditions[index % len(self.conditions)]
        sample = make_scene(scene_seed, condition, self.rgb_size, self.ir_size)
        sample.name = f"synthetic_{self.seed}_{index:06d}_{condition}"
        return sample


def draw_objects(canvas: Canvas, street: Street, objects: Sequence[SceneObject],
                 lights: list) -> list[int]:
    """Draw ``objects`` in the given order (far to near: nearer ones occlude) and add their
    night lights to ``lights``; returns each object's entity id in the canvas."""
    idents = []
    for obj in objects:
        ident = canvas.entity(obj.mask_class, street.depth(obj.ground_y), texture=5.0)
        for shape in obj.shapes:
            canvas.draw(shape, ident)
        lights += obj.lights
        idents.append(ident)
    return idents


def render_cameras(canvas: Canvas, street: Street, lights: list, rng: np.random.Generator,
                   weather: np.random.Generator, condition: str, homography: np.ndarray,
                   ir_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The drawn layers as the two cameras see them under ``condition``: (RGB uint8
    (H, W, 3), IR uint16 counts at ``ir_size``). ``rng`` draws the texture and sensor noise,
    ``weather`` the condition's own randomness."""
    on_ground = canvas.per_pixel("depth") == 0.0
    rgb = _texture(canvas, rng)
    temp = canvas.temp + on_ground * ground_warmth(street)[:, None]
    ir_noise = 4.0 * _noise(rng, *ir_size) \
        + rng.normal(0.0, 3.0, (1, ir_size[1])).astype(np.float32)  # column fixed pattern
    if condition == "night":
        rgb = _night(rgb, lights, weather)
    elif condition == "fog":
        depth = depth_map(canvas, street, on_ground)
        rgb, temp = _fog(rgb, temp, depth, street.ambient, weather)
    else:
        rgb *= weather.uniform(0.9, 1.1)
    return (np.clip(rgb, 0, 255).astype(np.uint8),
            _ir_counts(temp, homography, ir_size, ir_noise))


def rig_homography(rgb_size: tuple[int, int], ir_size: tuple[int, int]) -> np.ndarray:
    """IR -> RGB of the fixed rig: the IR frame lands on a slightly tilted quad covering 88 %
    of the RGB field of view, a little right of and above the centre."""
    height, width = rgb_size
    ir_h, ir_w = ir_size
    scale = 0.88 * min(width / ir_w, height / ir_h)
    quad_w, quad_h = scale * ir_w, scale * ir_h
    left, top = 0.6 * (width - quad_w), 0.4 * (height - quad_h)
    # Pixel-area corners map to pixel-area corners: integer coordinates are pixel centres.
    src = np.array([[0, 0], [ir_w, 0], [ir_w, ir_h], [0, ir_h]], np.float64) - 0.5
    dst = np.array([[left, top], [left + quad_w, top], [left + quad_w, top + quad_h],
                    [left, top + quad_h]]) - 0.5 + RIG_TILT * (quad_w, quad_h)
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))


@functools.lru_cache(maxsize=4)
def _noise_tile(height: int, width: int) -> np.ndarray:
    """Standard normal noise of twice the size, fixed: scenes take random crops of it, as
    fresh noise per scene would cost a large share of the time budget."""
    tile = np.random.default_rng(0).standard_normal((2 * height, 2 * width), np.float32)
    tile.flags.writeable = False
    return tile


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Standard normal noise, float32 (height, width), read-only."""
    y, x = rng.integers(0, height + 1), rng.integers(0, width + 1)
    return _noise_tile(height, width)[y:y + height, x:x + width]


def _texture(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Colour layer with per-entity grain and soft illumination, float32 (H, W, 3)."""
    height, width = canvas.ident.shape
    grain = _noise(rng, height, width) * canvas.per_pixel("texture")
    coarse = rng.standard_normal((height // 32 + 2, width // 32 + 2), dtype=np.float32)
    light = 1.0 + 0.08 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.multiply(canvas.rgb, cv2.merge([light] * 3), dtype=cv2.CV_32F) \
        + cv2.merge([grain] * 3)


def _night(rgb: np.ndarray, lights: list, rng: np.random.Generator) -> np.ndarray:
    """Very dark, noisy RGB; lamps, lit windows and vehicle lights glow."""
    height, width = rgb.shape[:2]
    glow = np.zeros((height // 4 + 1, width // 4 + 1, 3), np.float32)
    for x, y, radius, colour in lights:
        cv2.circle(glow, (round(x / 4), round(y / 4)), max(1, round(radius / 4)), colour, -1)
    glow = cv2.GaussianBlur(glow, (0, 0), 1.5)
    glow = cv2.resize(glow, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = cv2.merge([_noise(rng, height, width) for _ in range(3)])  # colour speckle
    dark = cv2.addWeighted(rgb, rng.uniform(0.06, 0.12), noise, rng.uniform(5.0, 9.0), 0.0)
    return cv2.scaleAdd(glow, 1.5, dark)


def _fog(rgb: np.ndarray, temp: np.ndarray, depth: np.ndarray, ambient: float,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Depth haze toward grey in RGB, over a veil that dims contrast even close by;
    thermal IR sees ~10x further, so only far heat fades."""
    visibility = rng.uniform(15.0, 45.0)
    haze = cv2.exp(depth * np.float32(-1.0 / visibility)) * np.float32(rng.uniform(0.6, 0.8))
    air = rng.uniform(175.0, 215.0)
    rgb = (rgb - air) * cv2.merge([haze] * 3) + air
    ir_haze = cv2.exp(depth * np.float32(-0.1 / visibility))
    return rgb, (temp - ambient) * ir_haze + ambient


def _ir_counts(temp: np.ndarray, homography: np.ndarray, ir_size: tuple[int, int],
               noise: np.ndarray) -> np.ndarray:
    """Temperatures in RGB geometry -> uint16 raw counts in IR geometry."""
    ir_h, ir_w = ir_size
    # WARP_INVERSE_MAP: each IR pixel samples the RGB-geometry layer at H @ [x, y, 1].
    warped = cv2.warpPerspective(temp, homography, (ir_w, ir_h),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
    warped = cv2.GaussianBlur(warped, (0, 0), 0.7)  # the thermal lens's softer image
    counts = IR_COUNTS_OFFSET + IR_COUNTS_PER_DEGREE * warped + noise
    return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
