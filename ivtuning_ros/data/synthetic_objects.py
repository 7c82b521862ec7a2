"""The objects on a synthetic street (`synthetic_street`): people, cars, buses, trucks,
motorcycles and bicycles, street lamps and cones, each a list of shapes in its own local frame
(metres) with its detection label (M3FD ids), mask class (MFNet ids) and night lights;
placed far to near, so nearer ones occlude."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .sample import M3FD_CLASSES
from .synthetic_street import (
    LAMP_LIGHT,
    SEG_BIKE,
    SEG_CAR,
    SEG_CONE,
    SEG_PERSON,
    UNLABELED,
    LocalFrame,
    Shape,
    Street,
)

MIN_BOX_SIZE = 12  # pixels, both sides of an object's box
MAX_COVERED = 0.5  # the most of an object's box that nearer objects may cover
PEOPLE, CAR, BUS, MOTORCYCLE, LAMP, TRUCK = range(len(M3FD_CLASSES))
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
TAIL_LIGHT, HEAD_LIGHT = (255, 40, 30), (255, 250, 225)


@dataclass
class SceneObject:
    """One object: detection label (None: mask only), segmentation class, its shapes."""

    label: int | None
    mask_class: int
    ground_y: float
    shapes: list[Shape] = field(default_factory=list)
    lights: list[tuple] = field(default_factory=list)  # (x, y, radius px, colour) at night

    def box(self, height: int, width: int) -> np.ndarray:
        """xyxy clipped to the image; pixels x0..x1 inclusive span [x0, x1 + 1]."""
        bounds = np.array([shape.bounds() for shape in self.shapes])
        x0, y0 = bounds[:, :2].min(0)
        x1, y1 = bounds[:, 2:].max(0) + 1
        return np.array([max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)], np.float32)


def place_objects(rng: np.random.Generator, street: Street) -> list[SceneObject]:
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


def _random_object(rng: np.random.Generator, street: Street, kind: int) -> SceneObject:
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
    facing = int(rng.choice([-1, 1]))
    if kind == LAMP:
        facing = -side  # the arm reaches over the road
    return object_at(rng, street, kind, y, lateral, facing)


def object_at(rng: np.random.Generator, street: Street, kind: int, y: float, lateral: float,
              facing: int) -> SceneObject:
    """An object of ``kind`` standing at image row ``y``, ``lateral`` metres right of the
    camera, facing right (1) or left (-1); ``rng`` draws its look (size, colours)."""
    frame = LocalFrame(street.x(y, lateral), y, street.ppm(y), facing=facing)
    shapes, lights = _BUILDERS[kind](rng, frame, street.ambient)
    return SceneObject(kind, MASK_CLASS[kind], y, shapes, lights)


def _person(rng: np.random.Generator, f: LocalFrame, amb: float) -> tuple[list, list]:
    h = rng.uniform(1.55, 1.9)
    shirt = tuple(int(c) for c in rng.integers(20, 235, 3))
    pants = tuple(int(c) for c in rng.integers(20, 160, 3))
    step = rng.uniform(-0.12, 0.12)
    cloth = rng.uniform(28.0, 31.0)
    legs = [Shape(f.points([(u0, 0.47 * h), (u1, 0.47 * h), (u1 + s, 0), (u0 + s, 0)]),
                   pants, cloth - 1.0) for u0, u1, s in ((-0.16, -0.01, step),
                                                         (0.01, 0.16, -step))]
    arms = [f.ellipse(u, 0.62 * h, 0.05, 0.16 * h, shirt, cloth + 1.0) for u in (-0.21, 0.21)]
    torso = f.ellipse(0.0, 0.65 * h, 0.18, 0.19 * h, shirt, cloth + 0.5)
    head = f.ellipse(0.0, 0.925 * h, 0.06 * h, 0.07 * h, SKIN[rng.integers(len(SKIN))],
                     rng.uniform(33.5, 35.5))
    return [*legs, *arms, torso, head], []


def _car(rng: np.random.Generator, f: LocalFrame, amb: float) -> tuple[list, list]:
    colour = _vehicle_colour(rng)
    body_t = amb + rng.uniform(2.0, 5.0)
    height = rng.uniform(1.4, 1.6)
    if rng.random() < 0.6:  # seen from behind
        w = rng.uniform(0.85, 0.95)
        shapes = [f.rect(-w + 0.05, 0, -w + 0.32, 0.4, TYRE, 40.0),
                  f.rect(w - 0.32, 0, w - 0.05, 0.4, TYRE, 40.0),
                  f.rect(-w, 0.22, w, 0.62 * height, colour, body_t),
                  Shape(f.points([(-0.9 * w, 0.62 * height), (0.9 * w, 0.62 * height),
                                   (0.72 * w, height), (-0.72 * w, height)]), colour, body_t),
                  Shape(f.points([(-0.8 * w, 0.66 * height), (0.8 * w, 0.66 * height),
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
              Shape(f.points([(-0.85 * half, 0.6 * height), (0.45 * half, 0.6 * height),
                               (0.2 * half, height), (-0.6 * half, height)]), colour, body_t),
              Shape(f.points([(-0.75 * half, 0.63 * height), (0.37 * half, 0.63 * height),
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


def _bus(rng: np.random.Generator, f: LocalFrame, amb: float) -> tuple[list, list]:
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


def _truck(rng: np.random.Generator, f: LocalFrame, amb: float) -> tuple[list, list]:
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


def _motorcycle(rng: np.random.Generator, f: LocalFrame, amb: float) -> tuple[list, list]:
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
    shapes += [Shape(f.points([(-0.6, 0.55), (0.5, 0.55), (0.65, 0.95), (-0.45, 0.85)]),
                      colour, amb + 6.0),
               f.rect(-0.2, 0.25, 0.3, 0.6, (70, 70, 75), rng.uniform(60.0, 80.0)),
               f.line([(0.55, 0.9), (0.7, 1.15)], 0.06, (40, 40, 40), amb + 3.0),
               f.rect(0.68, 0.8, 0.8, 0.92, HEAD_LIGHT, amb + 8.0)]
    return shapes, [(*f.pixel(0.8, 0.86), 0.25 * f.ppm, HEAD_LIGHT)]


def _lamp(rng: np.random.Generator, f: LocalFrame, amb: float) -> tuple[list, list]:
    height = rng.uniform(5.0, 8.0)
    reach = rng.uniform(1.0, 1.8)
    grey = (110, 112, 118)
    shapes = [f.rect(-0.09, 0, 0.09, height, grey, amb + 1.0),
              f.line([(0.0, height), (reach, height)], 0.1, grey, amb + 1.0),
              f.ellipse(reach, height - 0.08, 0.32, 0.12, (225, 225, 205),
                        rng.uniform(45.0, 60.0))]
    return shapes, [(*f.pixel(reach, height - 0.15), 0.9 * f.ppm, LAMP_LIGHT)]


def _cone(rng: np.random.Generator, street: Street) -> SceneObject:
    """A traffic cone near a road edge: in the mask (color_cone), no detection label."""
    y = street.horizon + (street.height - street.horizon) * rng.uniform(0.1, 0.9)
    side = int(rng.choice([-1, 1]))
    lateral = street.edge(side) - side * rng.uniform(0.3, 1.5)
    f = LocalFrame(street.x(y, lateral), y, street.ppm(y))
    temp = street.ambient + 2.0
    shapes = [f.rect(-0.22, 0.0, 0.22, 0.05, (40, 40, 40), temp),
              Shape(f.points([(-0.17, 0.05), (0.17, 0.05), (0.04, 0.72), (-0.04, 0.72)]),
                     (245, 110, 20), temp),
              Shape(f.points([(-0.12, 0.3), (0.12, 0.3), (0.09, 0.45), (-0.09, 0.45)]),
                     (240, 240, 240), temp)]
    return SceneObject(None, SEG_CONE, y, shapes)


_BUILDERS = {PEOPLE: _person, CAR: _car, BUS: _bus, TRUCK: _truck, MOTORCYCLE: _motorcycle,
             LAMP: _lamp}


def _vehicle_colour(rng: np.random.Generator) -> tuple:
    base = np.array(CAR_COLOURS[rng.integers(len(CAR_COLOURS))]) + rng.integers(-15, 16, 3)
    return tuple(int(c) for c in np.clip(base, 0, 255))
