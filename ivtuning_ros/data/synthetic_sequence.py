"""Synthetic RGB-IR video with ground-truth identities: people walking across a street and a
car passing in front of a pedestrian, rendered frame by frame by the still-scene renderer
(`synthetic.render_cameras`), for measuring a tracker (``ivtuning eval --tracking``).

One seed fixes the street, the actors (look, depth, speed, when they cross) and which frames
an overloaded node would have dropped (uneven stamps); the condition changes only the
camera images, as for still scenes. In the middle of the sequence the IR camera drops out
(``Sample.ir`` None), so a tracker must carry its tracks through an RGB-only stretch.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .sample import Sample
from .synthetic import CONDITIONS, draw_objects, render_cameras, rig_homography
from .synthetic_objects import CAR, PEOPLE, SceneObject, object_at
from .synthetic_street import Canvas, Street, draw_background, random_street

MIN_VISIBLE = 0.3  # an actor less visible than this (occluded, leaving) has no ground truth
MIN_SIDE = 8  # pixels: an actor's box narrower or lower than this has no ground truth
WALK_SPEED = (1.1, 1.6)  # m/s
CAR_SPEED = (5.0, 7.0)  # m/s


@dataclass(frozen=True)
class Actor:
    """One moving object: ``lateral(t) = lateral0 + speed * t`` metres right of the camera at
    a fixed ``depth`` (m); ``look`` seeds its appearance, the same in every frame."""

    identity: int
    kind: int
    depth: float
    lateral0: float
    speed: float
    look: int

    def lateral(self, t: float) -> float:
        return self.lateral0 + self.speed * t


@dataclass
class SequenceFrame:
    """One frame of a sequence: the sample (boxes of the visible actors; ``ir`` None during
    the IR dropout), its stamp in seconds and each box's ground-truth identity."""

    sample: Sample
    stamp_s: float
    identities: np.ndarray  # int64 (N,), aligned with sample.boxes


def make_sequence(seed: int, condition: str = "day", frames: int = 40, period: float = 0.1,
                  rgb_size: tuple[int, int] = (256, 320), ir_size: tuple[int, int] = (256, 320),
                  drop_rate: float = 0.1, ir_dropout: tuple[float, float] = (0.4, 0.6),
                  start_s: float = 100.0) -> list[SequenceFrame]:
    """A deterministic sequence of ``frames`` camera periods of ``period`` s, of which a
    ``drop_rate`` share (never the first or the last) is left out, as a node under overload
    drops them; IR is missing between the ``ir_dropout`` fractions of the duration."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
    if frames < 2 or period <= 0:
        raise ValueError(f"a sequence needs frames >= 2 and period > 0, got {frames}, {period}")
    rng = np.random.default_rng([seed, 27])
    street = random_street(rng, *rgb_size)
    duration = frames * period
    actors = _actors(rng, street, duration)
    kept = [0, *(i for i in range(1, frames - 1) if rng.random() >= drop_rate), frames - 1]
    homography = rig_homography(rgb_size, ir_size)
    weather = np.random.default_rng([seed, CONDITIONS.index(condition)])
    weather_state = weather.bit_generator.state
    sequence = []
    for index in kept:
        t = index * period
        weather.bit_generator.state = weather_state  # the same night, the same fog, each frame
        frame = _render(street, actors, t, seed, np.random.default_rng([seed, index]),
                        weather, condition, homography, ir_size)
        if ir_dropout[0] * duration <= t < ir_dropout[1] * duration:
            frame.sample.ir = None
        frame.stamp_s = start_s + t
        frame.sample.name = f"sequence_{seed}_{condition}_{index:04d}"
        sequence.append(frame)
    return sequence


def _actors(rng: np.random.Generator, street: Street, duration: float) -> list[Actor]:
    """Two people crossing each other, a slow pedestrian on the far side and a car passing in
    front of that pedestrian about halfway through."""
    middle = duration * rng.uniform(0.4, 0.6)
    depth = rng.uniform(6.0, 8.0)
    speed = rng.uniform(*WALK_SPEED)
    people = [Actor(0, PEOPLE, depth, street.centre - speed * middle, speed, 0)]
    speed = -rng.uniform(*WALK_SPEED)
    people.append(Actor(1, PEOPLE, depth + rng.uniform(1.0, 2.0),
                        street.centre - speed * middle, speed, 1))
    far = Actor(2, PEOPLE, rng.uniform(11.0, 13.0), street.centre + rng.uniform(-2.0, 2.0),
                rng.uniform(-0.4, 0.4), 2)
    speed = float(rng.choice([-1, 1])) * rng.uniform(*CAR_SPEED)
    passing = duration * rng.uniform(0.45, 0.55)
    car = Actor(3, CAR, far.depth - rng.uniform(2.0, 3.0),
                far.lateral(passing) - speed * passing, speed, _side_view_look(street))
    return [*people, far, car]


def _side_view_look(street: Street) -> int:
    """The first look seed that draws a car from the side (a passing car, not one ahead)."""
    y = street.row(10.0)
    for look in range(100):
        box = _actor_object(street, Actor(0, CAR, 10.0, 0.0, 1.0, look), 0.0, y).box(
            street.height, 10 * street.width)
        if box[2] - box[0] > 2.5 * (box[3] - box[1]):
            return look
    raise RuntimeError("no side-view car among the first 100 looks")


def _actor_object(street: Street, actor: Actor, t: float, y: float) -> SceneObject:
    facing = 1 if actor.speed >= 0 else -1
    look = np.random.default_rng([actor.look, actor.kind])
    return object_at(look, street, actor.kind, y, actor.lateral(t), facing)


def _render(street: Street, actors: list[Actor], t: float, seed: int, rng: np.random.Generator,
            weather: np.random.Generator, condition: str, homography: np.ndarray,
            ir_size: tuple[int, int]) -> SequenceFrame:
    height, width = street.height, street.width
    canvas = Canvas(height, width)
    # The same background in every frame: its own stream, restarted per frame.
    lights = draw_background(canvas, street, np.random.default_rng([seed, 28]))
    far_to_near = sorted(actors, key=lambda a: -a.depth)
    objects = [_actor_object(street, a, t, street.row(a.depth)) for a in far_to_near]
    idents = draw_objects(canvas, street, objects, lights)
    rgb, ir = render_cameras(canvas, street, lights, rng, weather, condition, homography,
                             ir_size)
    boxes, labels, identities = [], [], []
    for actor, obj, ident in zip(far_to_near, objects, idents, strict=True):
        box = obj.box(height, width)
        if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE \
                or _visible_share(canvas, obj, ident) < MIN_VISIBLE:
            continue
        boxes.append(box)
        labels.append(obj.label)
        identities.append(actor.identity)
    sample = Sample(rgb=rgb, ir=ir, homography=homography, boxes=boxes, labels=labels,
                    mask=canvas.per_pixel("mask_class").astype(np.uint8), condition=condition)
    return SequenceFrame(sample, t, np.array(identities, np.int64))


def _visible_share(canvas: Canvas, obj: SceneObject, ident: int) -> float:
    """Share of the object's pixels in the image that nearer objects leave visible."""
    alone = np.zeros(canvas.ident.shape, np.uint8)
    for shape in obj.shapes:
        if shape.thickness:
            cv2.polylines(alone, [shape.points], False, 1, shape.thickness)
        else:
            cv2.fillPoly(alone, [shape.points], 1)
    area = int(alone.sum())
    return float((canvas.ident == ident).sum()) / area if area else 0.0
