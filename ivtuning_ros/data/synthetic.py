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

Conditions change the RGB only (fog also attenuates the IR slightly): one seed
gives the same geometry, ground truth and, except in fog, IR in every condition.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .sample import M3FD_CLASSES, MFNET_CLASSES, Sample

CONDITIONS = ("day", "night", "fog")
IR_COUNTS_OFFSET = 7000.0
IR_COUNTS_PER_DEGREE = 100.0
MIN_BOX_SIZE = 12  # pixels, both sides of an object's box
CAMERA_HEIGHT = 1.5  # metres
MAX_COVERED = 0.5  # the most of an object's box that nearer objects may cover
# Corner offsets of the IR quad in the RGB frame, in quad sizes: a mild perspective.
RIG_TILT = np.array([[0.008, -0.006], [-0.004, 0.005], [0.006, 0.004], [-0.007, -0.005]])

PEOPLE, CAR, BUS, MOTORCYCLE, LAMP, TRUCK = range(len(M3FD_CLASSES))
(UNLABELED, SEG_CAR, SEG_PERSON, SEG_BIKE, SEG_CURVE, _, SEG_GUARDRAIL, SEG_CONE,
 SEG_BUMP) = range(len(MFNET_CLASSES))
MASK_CLASS = {PEOPLE: SEG_PERSON, CAR: SEG_CAR, BUS: SEG_CAR, TRUCK: SEG_CAR,
              MOTORCYCLE: SEG_BIKE, LAMP: UNLABELED}
OBJECT_KINDS = (PEOPLE, CAR, BUS, MOTORCYCLE, LAMP, TRUCK)
OBJECT_ODDS = (0.36, 0.28, 0.06, 0.12, 0.11, 0.07)
# How far down the ground (0: horizon, 1: image bottom) each kind may stand.
NEAREST_ROW = {PEOPLE: 0.95, CAR: 0.7, BUS: 0.45, MOTORCYCLE: 0.9, LAMP: 0.9, TRUCK: 0.45}
CAR_COLOURS = ((200, 30, 30), (30, 60, 160), (225, 225, 225), (30, 30, 30), (125, 125, 130),
               (185, 165, 40), (40, 110, 60), (150, 150, 160))
SKIN = ((225, 185, 150), (190, 140, 100), (120, 80, 55), (240, 205, 175))
GLASS, TYRE = (45, 55, 65), (28, 28, 28)
TAIL_LIGHT, HEAD_LIGHT, LAMP_LIGHT = (255, 40, 30), (255, 250, 225), (255, 215, 150)


@dataclass
class _Shape:
    """A filled polygon (thickness 0) or an open polyline, in integer RGB pixels."""

    points: np.ndarray
    colour: tuple
    temp: float
    thickness: int = 0

    def bounds(self) -> tuple[int, int, int, int]:
        """Inclusive pixel bounds; generous by a pixel for polylines."""
        pad = self.thickness // 2 + 1 if self.thickness else 0
        (x0, y0), (x1, y1) = self.points.min(0), self.points.max(0)
        return x0 - pad, y0 - pad, x1 + pad, y1 + pad


@dataclass
class _Object:
    """One object: detection label (None: mask only), segmentation class, its shapes."""

    label: int | None
    mask_class: int
    ground_y: float
    shapes: list[_Shape] = field(default_factory=list)
    lights: list[tuple] = field(default_factory=list)  # (x, y, radius px, colour) at night

    def box(self, height: int, width: int) -> np.ndarray:
        """xyxy clipped to the image; pixels x0..x1 inclusive span [x0, x1 + 1]."""
        bounds = np.array([shape.bounds() for shape in self.shapes])
        x0, y0 = bounds[:, :2].min(0)
        x1, y1 = bounds[:, 2:].max(0) + 1
        return np.array([max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)], np.float32)


class _Frame:
    """Object-local metres (u right, v up, origin on the ground) -> image pixels."""

    def __init__(self, x: float, y: float, ppm: float, facing: int = 1) -> None:
        self.x, self.y, self.ppm, self.facing = x, y, ppm, facing

    def points(self, uv: Sequence[tuple[float, float]]) -> np.ndarray:
        pixels = np.asarray(uv) * (self.facing * self.ppm, -self.ppm) + (self.x, self.y)
        return np.round(pixels).astype(np.int32)

    def rect(self, u0: float, v0: float, u1: float, v1: float, colour: tuple,
             temp: float) -> _Shape:
        return _Shape(self.points([(u0, v0), (u1, v0), (u1, v1), (u0, v1)]), colour, temp)

    def ellipse(self, u: float, v: float, au: float, av: float, colour: tuple,
                temp: float) -> _Shape:
        return _Shape(self.points(_ellipse_uv(u, v, au, av)), colour, temp)

    def ring(self, u: float, v: float, radius: float, width_m: float, colour: tuple,
             temp: float) -> _Shape:
        return self.line(_ellipse_uv(u, v, radius, radius), width_m, colour, temp, closed=True)

    def line(self, uv: Sequence[tuple[float, float]], width_m: float, colour: tuple,
             temp: float, closed: bool = False) -> _Shape:
        points = self.points(list(uv) + ([uv[0]] if closed else []))
        return _Shape(points, colour, temp, max(1, round(width_m * self.ppm)))

    def pixel(self, u: float, v: float) -> tuple[float, float]:
        return self.x + self.facing * u * self.ppm, self.y - v * self.ppm


def _ellipse_uv(u: float, v: float, au: float, av: float) -> np.ndarray:
    """20 points (20, 2) around an axis-aligned ellipse, in metres."""
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return np.stack([u + au * np.cos(angles), v + av * np.sin(angles)], axis=1)


@dataclass
class _Street:
    """The scene's geometry and climate, drawn from the seed."""

    height: int
    width: int
    horizon: float
    vanish_x: float
    centre: float  # road centre, metres right of the camera
    half_width: float
    guardrail_side: int  # -1 left, 1 right, 0 none
    ambient: float  # deg C

    def ppm(self, y: float) -> float:
        return max(y - self.horizon, 1e-3) / CAMERA_HEIGHT

    def x(self, y: float, lateral: float) -> float:
        return self.vanish_x + lateral * self.ppm(y)

    def row(self, depth: float) -> float:
        return self.horizon + CAMERA_HEIGHT * self.width / depth

    def depth(self, y: float) -> float:
        return CAMERA_HEIGHT * self.width / max(y - self.horizon, 0.5)

    def edge(self, side: int) -> float:
        return self.centre + side * self.half_width

    @property
    def sidewalk_sides(self) -> list[int]:
        return [side for side in (-1, 1) if side != self.guardrail_side]


@dataclass
class _Entity:
    mask_class: int
    depth: float  # metres; 0: on the ground, depth by row; inf: sky
    texture: float  # RGB texture amplitude


class _Canvas:
    """The three layers a scene is drawn into, and the entities behind the id layer."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.uint8)
        self.temp = np.zeros((height, width), np.float32)
        self.ident = np.zeros((height, width), np.uint8)
        self.entities: list[_Entity] = []

    def entity(self, mask_class: int, depth: float = 0.0, texture: float = 6.0) -> int:
        if len(self.entities) > np.iinfo(np.uint8).max:
            raise ValueError("too many entities in one synthetic scene")
        self.entities.append(_Entity(mask_class, depth, texture))
        return len(self.entities) - 1

    def draw(self, shape: _Shape, ident: int) -> None:
        points = [shape.points]
        if shape.thickness:
            for layer, value in ((self.rgb, shape.colour), (self.temp, shape.temp),
                                 (self.ident, ident)):
                cv2.polylines(layer, points, False, value, shape.thickness)
        else:
            for layer, value in ((self.rgb, shape.colour), (self.temp, shape.temp),
                                 (self.ident, ident)):
                cv2.fillPoly(layer, points, value)

    def per_pixel(self, name: str) -> np.ndarray:
        """An entity attribute at every pixel, float32 (H, W)."""
        table = np.zeros(256, np.float32)
        table[:len(self.entities)] = [getattr(entity, name) for entity in self.entities]
        return cv2.LUT(self.ident, table)


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
        ``homography`` IR -> RGB, boxes/labels in M3FD ids, mask in MFNet ids.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
    if min(*rgb_size, *ir_size) < 16:
        raise ValueError(f"image sizes must be at least 16 pixels, got rgb {rgb_size}, "
                         f"ir {ir_size}")
    rng = np.random.default_rng(seed)
    homography = _rig_homography(rgb_size, ir_size)
    street = _random_street(rng, *rgb_size)
    canvas = _Canvas(*rgb_size)
    lights = _draw_background(canvas, street, rng)
    objects = _place_objects(rng, street)
    for obj in objects:
        ident = canvas.entity(obj.mask_class, street.depth(obj.ground_y), texture=5.0)
        for shape in obj.shapes:
            canvas.draw(shape, ident)
        lights += obj.lights
    on_ground = canvas.per_pixel("depth") == 0.0
    rgb = _texture(canvas, rng)
    temp = canvas.temp + on_ground * _ground_warmth(street)[:, None]
    ir_noise = 4.0 * _noise(rng, *ir_size) \
        + rng.normal(0.0, 3.0, (1, ir_size[1])).astype(np.float32)  # column fixed pattern
    # Conditions draw from their own stream: the scene above is the same in all of them.
    weather = np.random.default_rng([seed, CONDITIONS.index(condition)])
    if condition == "night":
        rgb = _night(rgb, lights, weather)
    elif condition == "fog":
        depth = _depth_map(canvas, street, on_ground)
        rgb, temp = _fog(rgb, temp, depth, street.ambient, weather)
    else:
        rgb *= weather.uniform(0.9, 1.1)
    labelled = [obj for obj in objects if obj.label is not None]
    return Sample(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8),
        ir=_ir_counts(temp, homography, ir_size, ir_noise),
        homography=homography,
        boxes=np.array([obj.box(*rgb_size) for obj in labelled], np.float32).reshape(-1, 4),
        labels=np.array([obj.label for obj in labelled], np.int64),
        mask=canvas.per_pixel("mask_class").astype(np.uint8),
        name=f"synthetic_{seed}_{condition}",
        condition=condition,
    )


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


def _rig_homography(rgb_size: tuple[int, int], ir_size: tuple[int, int]) -> np.ndarray:
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


def _random_street(rng: np.random.Generator, height: int, width: int) -> _Street:
    return _Street(height=height, width=width, horizon=height * rng.uniform(0.36, 0.46),
                   vanish_x=width * rng.uniform(0.4, 0.6), centre=rng.uniform(-1.5, 1.5),
                   half_width=rng.uniform(3.5, 6.5),
                   guardrail_side=int(rng.choice([-1, 0, 1])), ambient=rng.uniform(2.0, 18.0))


def _ground_strip(street: _Street, lateral0: float, lateral1: float) -> np.ndarray:
    """The ground between two lateral offsets: a triangle from the vanishing point."""
    bottom = 3.0 * street.height  # far below the image: fillPoly clips
    return np.round([(street.vanish_x, street.horizon), (street.x(bottom, lateral0), bottom),
                     (street.x(bottom, lateral1), bottom)]).astype(np.int32)


def _ground_quad(street: _Street, lateral0: float, lateral1: float, depth0: float,
                 depth1: float, v0: float = 0.0, v1: float = 0.0) -> np.ndarray:
    """A patch of a plane along the road: laterals x depths, heights v0 (near) .. v1."""
    corners = []
    for lateral, depth, v in ((lateral0, depth0, v0), (lateral1, depth0, v1),
                              (lateral1, depth1, v1), (lateral0, depth1, v0)):
        y = street.row(depth)
        corners.append((street.x(y, lateral), y - v * street.ppm(y)))
    return np.round(corners).astype(np.int32)


def _draw_background(canvas: _Canvas, street: _Street, rng: np.random.Generator) -> list:
    """Sky, skyline, ground, sidewalks, road, curbs, markings, bump, guardrail; returns the
    night light sources (lit windows)."""
    height, width = canvas.ident.shape
    amb = street.ambient
    hz = int(np.ceil(street.horizon))
    rows = np.linspace(0.0, 1.0, hz, dtype=np.float32)[:, None]
    sky = np.array([110, 160, 230], np.float32) * (1 - rows) \
        + np.array([195, 210, 235], np.float32) * rows
    canvas.rgb[:hz] = sky[:, None].astype(np.uint8)
    canvas.temp[:hz] = (amb - 30.0 + 22.0 * rows)
    canvas.ident[:hz] = canvas.entity(UNLABELED, np.inf, texture=2.0)
    grass = tuple(int(c) for c in rng.integers(-15, 16, 3) + (95, 120, 65))
    canvas.rgb[hz:] = grass
    canvas.temp[hz:] = amb + 1.0
    canvas.ident[hz:] = canvas.entity(UNLABELED, texture=14.0)
    lights = _draw_skyline(canvas, street, rng)
    sidewalk = canvas.entity(UNLABELED, texture=8.0)
    for side in street.sidewalk_sides:
        edge = street.edge(side)
        canvas.draw(_Shape(_ground_strip(street, edge, edge + side * rng.uniform(2.5, 4.0)),
                           (160, 160, 155), amb + 1.5), sidewalk)
    road = canvas.entity(UNLABELED, texture=7.0)
    asphalt = int(rng.integers(70, 100))
    road_temp = amb + rng.uniform(2.0, 6.0)
    canvas.draw(_Shape(_ground_strip(street, street.edge(-1), street.edge(1)),
                       (asphalt,) * 3, road_temp), road)
    curb = canvas.entity(SEG_CURVE, texture=5.0)
    for side in (-1, 1):
        edge = street.edge(side)
        canvas.draw(_Shape(_ground_strip(street, edge, edge + side * 0.3), (195, 195, 190),
                           amb + 2.0), curb)
    for depth in np.arange(rng.uniform(2.0, 8.0), 80.0, 9.0):
        canvas.draw(_Shape(_ground_quad(street, street.centre - 0.08, street.centre + 0.08,
                                        depth, depth + 3.0), (230, 230, 225), road_temp - 1.0),
                    road)
    if rng.random() < 0.3:
        _draw_bump(canvas, street, rng, road_temp)
    if street.guardrail_side:
        _draw_guardrail(canvas, street)
    return lights


def _draw_skyline(canvas: _Canvas, street: _Street, rng: np.random.Generator) -> list:
    """Flat buildings far away at the horizon, with windows; some windows lit at night."""
    lights = []
    x = rng.uniform(-0.1, 0.05) * street.width
    while x < street.width:
        depth = rng.uniform(70.0, 160.0)
        ppm = street.width / depth
        frame = _Frame(x, street.row(depth), ppm)
        building_w, building_h = rng.uniform(12.0, 35.0), rng.uniform(8.0, 40.0)
        ident = canvas.entity(UNLABELED, depth, texture=6.0)
        shade = int(rng.integers(90, 190))
        canvas.draw(frame.rect(0, 0, building_w, building_h, (shade, shade - 10, shade - 25),
                               street.ambient + 3.0), ident)
        if 1.5 * ppm >= 2:  # windows of at least two pixels
            for u in np.arange(1.5, building_w - 2.0, 3.5):
                for v in np.arange(2.0, building_h - 2.0, 3.5):
                    lit = rng.random() < 0.25
                    canvas.draw(frame.rect(u, v, u + 1.5, v + 1.5, (70, 85, 100),
                                           street.ambient + (5.0 if lit else 1.0)), ident)
                    if lit:
                        lights.append((*frame.pixel(u + 0.75, v + 0.75), 0.8 * ppm,
                                       LAMP_LIGHT))
        x += (building_w + rng.uniform(0.0, 8.0)) * ppm
    return lights


def _draw_bump(canvas: _Canvas, street: _Street, rng: np.random.Generator,
               road_temp: float) -> None:
    """A speed bump across the road: yellow and black stripes."""
    ident = canvas.entity(SEG_BUMP, texture=4.0)
    depth = rng.uniform(6.0, 25.0)
    left, right = street.edge(-1), street.edge(1)
    stripes = np.linspace(left, right, 13)
    for i, (lateral0, lateral1) in enumerate(zip(stripes[:-1], stripes[1:], strict=True)):
        colour = (225, 190, 30) if i % 2 else (25, 25, 25)
        canvas.draw(_Shape(_ground_quad(street, lateral0, lateral1, depth, depth + 0.6),
                           colour, road_temp + 1.0), ident)


def _draw_guardrail(canvas: _Canvas, street: _Street) -> None:
    """A metal beam 0.45-0.8 m high along one road edge, with posts every 4 m."""
    ident = canvas.entity(SEG_GUARDRAIL, texture=3.0)
    side = street.guardrail_side
    lateral = street.edge(side) + side * 0.7
    amb = street.ambient
    for depth in np.arange(120.0, 1.0, -4.0):  # far to near
        y = street.row(depth)
        frame = _Frame(street.x(y, lateral), y, street.ppm(y))
        canvas.draw(frame.rect(-0.06, 0.0, 0.06, 0.78, (115, 115, 120), amb), ident)
    beam = np.concatenate([_ground_quad(street, lateral, lateral, 1.0, 150.0, 0.45, 0.45),
                           _ground_quad(street, lateral, lateral, 150.0, 1.0, 0.8, 0.8)])
    canvas.draw(_Shape(np.array([beam[0], beam[3], beam[5], beam[6]], np.int32),
                       (175, 178, 182), amb - 1.0), ident)


def _place_objects(rng: np.random.Generator, street: _Street) -> list[_Object]:
    """Random objects (big enough, not hidden behind nearer ones) and cones, far to near."""
    candidates = [_random_object(rng, street, int(rng.choice(OBJECT_KINDS, p=OBJECT_ODDS)))
                  for _ in range(rng.integers(6, 16))]
    candidates.sort(key=lambda obj: -obj.ground_y)  # near to far
    covered = np.zeros((street.height, street.width), bool)
    kept = []
    for obj in candidates:
        x0, y0, x1, y1 = obj.box(street.height, street.width).astype(int)
        if min(x1 - x0, y1 - y0) < MIN_BOX_SIZE or covered[y0:y1, x0:x1].mean() > MAX_COVERED:
            continue
        covered[y0:y1, x0:x1] = True
        kept.append(obj)
    kept += [_cone(rng, street) for _ in range(rng.integers(0, 4))]
    return sorted(kept, key=lambda obj: obj.ground_y)


def _random_object(rng: np.random.Generator, street: _Street, kind: int) -> _Object:
    # Skewed toward the horizon: far (small) objects are the common case, as on real roads;
    # big vehicles stay a few metres further away than people.
    nearest = NEAREST_ROW[kind]
    y = street.horizon + (street.height - street.horizon) \
        * (0.05 + (nearest - 0.05) * rng.random() ** 1.8)
    near_edge = street.half_width - 1.0
    if kind == LAMP:
        side = int(rng.choice(street.sidewalk_sides))
        lateral = street.edge(side) + side * 0.6
    elif kind == PEOPLE and rng.random() < 0.6:
        side = int(rng.choice(street.sidewalk_sides))
        lateral = street.edge(side) + side * rng.uniform(0.6, 2.5)
    else:
        lateral = street.centre + rng.uniform(-near_edge, near_edge)
    frame = _Frame(street.x(y, lateral), y, street.ppm(y), facing=int(rng.choice([-1, 1])))
    if kind == LAMP:
        frame.facing = -side  # the arm reaches over the road
    shapes, lights = _BUILDERS[kind](rng, frame, street.ambient)
    return _Object(kind, MASK_CLASS[kind], y, shapes, lights)


def _person(rng: np.random.Generator, f: _Frame, amb: float) -> tuple[list, list]:
    h = rng.uniform(1.55, 1.9)
    shirt = tuple(int(c) for c in rng.integers(20, 235, 3))
    pants = tuple(int(c) for c in rng.integers(20, 160, 3))
    step = rng.uniform(-0.12, 0.12)
    cloth = rng.uniform(28.0, 31.0)
    legs = [_Shape(f.points([(u0, 0.47 * h), (u1, 0.47 * h), (u1 + s, 0), (u0 + s, 0)]),
                   pants, cloth - 1.0) for u0, u1, s in ((-0.16, -0.01, step),
                                                         (0.01, 0.16, -step))]
    arms = [f.ellipse(u, 0.62 * h, 0.05, 0.16 * h, shirt, cloth + 1.0) for u in (-0.21, 0.21)]
    torso = f.ellipse(0.0, 0.65 * h, 0.18, 0.19 * h, shirt, cloth + 0.5)
    head = f.ellipse(0.0, 0.925 * h, 0.06 * h, 0.07 * h, SKIN[rng.integers(len(SKIN))],
                     rng.uniform(33.5, 35.5))
    return [*legs, *arms, torso, head], []


def _car(rng: np.random.Generator, f: _Frame, amb: float) -> tuple[list, list]:
    colour = _vehicle_colour(rng)
    body_t = amb + rng.uniform(2.0, 5.0)
    height = rng.uniform(1.4, 1.6)
    if rng.random() < 0.6:  # seen from behind
        w = rng.uniform(0.85, 0.95)
        shapes = [f.rect(-w + 0.05, 0, -w + 0.32, 0.4, TYRE, 40.0),
                  f.rect(w - 0.32, 0, w - 0.05, 0.4, TYRE, 40.0),
                  f.rect(-w, 0.22, w, 0.62 * height, colour, body_t),
                  _Shape(f.points([(-0.9 * w, 0.62 * height), (0.9 * w, 0.62 * height),
                                   (0.72 * w, height), (-0.72 * w, height)]), colour, body_t),
                  _Shape(f.points([(-0.8 * w, 0.66 * height), (0.8 * w, 0.66 * height),
                                   (0.66 * w, 0.95 * height), (-0.66 * w, 0.95 * height)]),
                         GLASS, amb - 3.0),
                  f.rect(-0.25, 0.3, 0.25, 0.42, (235, 235, 235), body_t),
                  f.ellipse(-0.5, 0.22, 0.045, 0.045, TYRE, 75.0)]
        lamps = [f.rect(s * w, 0.5, s * (w - 0.25), 0.6 * height, TAIL_LIGHT, amb + 6.0)
                 for s in (-1, 1)]
        lights = [(*f.pixel(s * (w - 0.12), 0.55 * height), 0.3 * f.ppm, TAIL_LIGHT)
                  for s in (-1, 1)]
        return shapes + lamps, lights
    half = rng.uniform(2.0, 2.4)
    shapes = [f.rect(-half, 0.25, half, 0.6 * height, colour, body_t),
              f.rect(0.45 * half, 0.3, half, 0.6 * height, colour, rng.uniform(50.0, 65.0)),
              _Shape(f.points([(-0.85 * half, 0.6 * height), (0.45 * half, 0.6 * height),
                               (0.2 * half, height), (-0.6 * half, height)]), colour, body_t),
              _Shape(f.points([(-0.75 * half, 0.63 * height), (0.37 * half, 0.63 * height),
                               (0.16 * half, 0.94 * height), (-0.55 * half, 0.94 * height)]),
                     GLASS, amb - 3.0)]
    for u in (-0.65 * half, 0.65 * half):
        shapes += [f.ellipse(u, 0.32, 0.32, 0.32, TYRE, 40.0),
                   f.ellipse(u, 0.32, 0.14, 0.14, (150, 150, 150), 48.0)]
    shapes += [f.rect(half - 0.12, 0.45, half, 0.58, HEAD_LIGHT, amb + 8.0),
               f.rect(-half, 0.5, -half + 0.1, 0.62, TAIL_LIGHT, amb + 5.0)]
    lights = [(*f.pixel(half, 0.5), 0.35 * f.ppm, HEAD_LIGHT),
              (*f.pixel(-half, 0.56), 0.25 * f.ppm, TAIL_LIGHT)]
    return shapes, lights


def _bus(rng: np.random.Generator, f: _Frame, amb: float) -> tuple[list, list]:
    colour = _vehicle_colour(rng)
    body_t = amb + rng.uniform(2.0, 5.0)
    height = rng.uniform(3.0, 3.3)
    if rng.random() < 0.5:  # seen from behind
        w = 1.25
        shapes = [f.rect(-w + 0.1, 0, -w + 0.45, 0.5, TYRE, 42.0),
                  f.rect(w - 0.45, 0, w - 0.1, 0.5, TYRE, 42.0),
                  f.rect(-w, 0.3, w, height, colour, body_t),
                  f.rect(-0.9 * w, 0.55 * height, 0.9 * w, 0.9 * height, GLASS, amb - 2.0),
                  f.rect(-0.6, 0.4, 0.6, 0.9, (60, 60, 60), rng.uniform(55.0, 70.0))]
        lights = [(*f.pixel(s * (w - 0.15), 1.1), 0.35 * f.ppm, TAIL_LIGHT) for s in (-1, 1)]
        return shapes + [f.rect(s * w, 1.0, s * (w - 0.2), 1.25, TAIL_LIGHT, amb + 6.0)
                         for s in (-1, 1)], lights
    half = rng.uniform(5.0, 6.0)
    shapes = [f.rect(-half, 0.3, half, height, colour, body_t),
              f.rect(-half, 0.35, -0.7 * half, 1.2, colour, rng.uniform(50.0, 65.0))]
    for u in np.linspace(-0.85 * half, 0.95 * half, 7)[:-1]:
        shapes.append(f.rect(u, 0.55 * height, u + 0.25 * half, 0.88 * height, GLASS,
                             amb - 2.0))
    for u in (-0.6 * half, 0.65 * half):
        shapes += [f.ellipse(u, 0.5, 0.5, 0.5, TYRE, 42.0),
                   f.ellipse(u, 0.5, 0.22, 0.22, (150, 150, 150), 50.0)]
    shapes.append(f.rect(half - 0.15, 0.6, half, 0.85, HEAD_LIGHT, amb + 8.0))
    return shapes, [(*f.pixel(half, 0.72), 0.4 * f.ppm, HEAD_LIGHT)]


def _truck(rng: np.random.Generator, f: _Frame, amb: float) -> tuple[list, list]:
    cab = _vehicle_colour(rng)
    cargo = tuple(int(c) for c in rng.integers(150, 240, 3))
    box_h = rng.uniform(3.4, 3.8)
    if rng.random() < 0.5:  # seen from behind: the cargo box's doors
        w = 1.25
        shapes = [f.rect(-w + 0.1, 0, -w + 0.5, 0.55, TYRE, 42.0),
                  f.rect(w - 0.5, 0, w - 0.1, 0.55, TYRE, 42.0),
                  f.rect(-0.9, 0.35, 0.9, 0.8, (50, 50, 50), amb + 6.0),
                  f.rect(-w, 0.8, w, box_h, cargo, amb + 2.0),
                  f.line([(0.0, 0.85), (0.0, box_h - 0.05)], 0.05, (90, 90, 90), amb + 2.0),
                  f.ellipse(-0.8, 0.45, 0.06, 0.06, TYRE, 80.0)]
        lights = [(*f.pixel(s * (w - 0.15), 0.95), 0.35 * f.ppm, TAIL_LIGHT) for s in (-1, 1)]
        return shapes, lights
    length = rng.uniform(5.0, 7.0)
    shapes = [f.rect(-length / 2, 0.5, length / 2 + 2.4, 1.0, (45, 45, 45), amb + 5.0),
              f.rect(-length / 2, 1.0, length / 2, box_h, cargo, amb + 2.0),
              f.rect(length / 2 + 0.2, 0.6, length / 2 + 2.4, 3.0, cab, amb + 4.0),
              f.rect(length / 2 + 0.5, 0.7, length / 2 + 2.4, 1.6, cab, rng.uniform(55.0, 70.0)),
              f.rect(length / 2 + 1.3, 1.9, length / 2 + 2.3, 2.8, GLASS, amb - 2.0)]
    for u in (-length / 2 + 0.8, -length / 2 + 1.9, length / 2 + 1.5):
        shapes += [f.ellipse(u, 0.5, 0.5, 0.5, TYRE, 42.0),
                   f.ellipse(u, 0.5, 0.2, 0.2, (150, 150, 150), 50.0)]
    shapes.append(f.rect(length / 2 + 2.25, 0.8, length / 2 + 2.4, 1.1, HEAD_LIGHT, amb + 8.0))
    return shapes, [(*f.pixel(length / 2 + 2.4, 0.95), 0.4 * f.ppm, HEAD_LIGHT)]


def _motorcycle(rng: np.random.Generator, f: _Frame, amb: float) -> tuple[list, list]:
    """A motorcycle (hot engine) or a bicycle (cool, thin), side view."""
    colour = _vehicle_colour(rng)
    if rng.random() < 0.5:
        bar = (40, 40, 40)
        shapes = [f.ring(u, 0.34, 0.34, 0.05, TYRE, amb + 1.0) for u in (-0.52, 0.52)]
        shapes += [f.line([(-0.52, 0.34), (-0.1, 0.34), (0.35, 0.85), (-0.2, 0.85)], 0.05,
                          colour, amb + 1.0, closed=True),
                   f.line([(0.35, 0.85), (0.52, 0.34)], 0.05, colour, amb + 1.0),
                   f.line([(0.3, 1.0), (0.42, 1.0)], 0.05, bar, amb + 1.0),
                   f.line([(-0.25, 0.95), (-0.12, 0.95)], 0.07, bar, amb + 1.0)]
        return shapes, []
    shapes = []
    for u in (-0.7, 0.7):
        shapes += [f.ellipse(u, 0.32, 0.32, 0.32, TYRE, 38.0),
                   f.ellipse(u, 0.32, 0.13, 0.13, (160, 160, 160), 45.0)]
    shapes += [_Shape(f.points([(-0.6, 0.55), (0.5, 0.55), (0.65, 0.95), (-0.45, 0.85)]),
                      colour, amb + 6.0),
               f.rect(-0.2, 0.25, 0.3, 0.6, (70, 70, 75), rng.uniform(60.0, 80.0)),
               f.line([(0.55, 0.9), (0.7, 1.15)], 0.06, (40, 40, 40), amb + 3.0),
               f.rect(0.68, 0.8, 0.8, 0.92, HEAD_LIGHT, amb + 8.0)]
    return shapes, [(*f.pixel(0.8, 0.86), 0.25 * f.ppm, HEAD_LIGHT)]


def _lamp(rng: np.random.Generator, f: _Frame, amb: float) -> tuple[list, list]:
    height = rng.uniform(5.0, 8.0)
    reach = rng.uniform(1.0, 1.8)
    grey = (110, 112, 118)
    shapes = [f.rect(-0.09, 0, 0.09, height, grey, amb + 1.0),
              f.line([(0.0, height), (reach, height)], 0.1, grey, amb + 1.0),
              f.ellipse(reach, height - 0.08, 0.32, 0.12, (225, 225, 205),
                        rng.uniform(45.0, 60.0))]
    return shapes, [(*f.pixel(reach, height - 0.15), 0.9 * f.ppm, LAMP_LIGHT)]


def _cone(rng: np.random.Generator, street: _Street) -> _Object:
    """A traffic cone near a road edge: in the mask (color_cone), no detection label."""
    y = street.horizon + (street.height - street.horizon) * rng.uniform(0.1, 0.9)
    side = int(rng.choice([-1, 1]))
    lateral = street.edge(side) - side * rng.uniform(0.3, 1.5)
    f = _Frame(street.x(y, lateral), y, street.ppm(y))
    temp = street.ambient + 2.0
    shapes = [f.rect(-0.22, 0.0, 0.22, 0.05, (40, 40, 40), temp),
              _Shape(f.points([(-0.17, 0.05), (0.17, 0.05), (0.04, 0.72), (-0.04, 0.72)]),
                     (245, 110, 20), temp),
              _Shape(f.points([(-0.12, 0.3), (0.12, 0.3), (0.09, 0.45), (-0.09, 0.45)]),
                     (240, 240, 240), temp)]
    return _Object(None, SEG_CONE, y, shapes)


_BUILDERS = {PEOPLE: _person, CAR: _car, BUS: _bus, TRUCK: _truck, MOTORCYCLE: _motorcycle,
             LAMP: _lamp}


def _vehicle_colour(rng: np.random.Generator) -> tuple:
    base = np.array(CAR_COLOURS[rng.integers(len(CAR_COLOURS))]) + rng.integers(-15, 16, 3)
    return tuple(int(c) for c in np.clip(base, 0, 255))


def _depth_map(canvas: _Canvas, street: _Street, on_ground: np.ndarray) -> np.ndarray:
    """Metres to every pixel (float32 (H, W)); inf for the sky."""
    rows = np.arange(street.height, dtype=np.float32)
    row_depth = CAMERA_HEIGHT * street.width / np.maximum(rows - street.horizon, 0.5)
    return np.where(on_ground, row_depth[:, None], canvas.per_pixel("depth"))


def _ground_warmth(street: _Street) -> np.ndarray:
    """Per row, deg C: sun-warmed ground is warmer near the camera (a smooth gradient)."""
    rows = np.arange(street.height, dtype=np.float32)
    return 2.5 * np.clip((rows - street.horizon) / (street.height - street.horizon), 0, 1)


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


def _texture(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
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
