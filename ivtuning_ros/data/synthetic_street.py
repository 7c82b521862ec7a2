"""The street of a synthetic scene (`synthetic`): its geometry, and the three layers it is
drawn into (`Canvas`: colour, temperature in deg C, an entity id per pixel) with the sky,
skyline, ground, road, curbs, markings, bump and guardrail.

Camera model: flat ground, camera 1.5 m above it, horizon at row ``hz``: at row y
the ground is ``(y - hz) / 1.5`` pixels per metre wide and ``1.5 * W / (y - hz)``
metres away.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .sample import MFNET_CLASSES

CAMERA_HEIGHT = 1.5  # metres
(UNLABELED, SEG_CAR, SEG_PERSON, SEG_BIKE, SEG_CURVE, _, SEG_GUARDRAIL, SEG_CONE,
 SEG_BUMP) = range(len(MFNET_CLASSES))
LAMP_LIGHT = (255, 215, 150)  # street lamps and lit windows at night


@dataclass
class Shape:
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


class LocalFrame:
    """Object-local metres (u right, v up, origin on the ground) -> image pixels."""

    def __init__(self, x: float, y: float, ppm: float, facing: int = 1) -> None:
        self.x, self.y, self.ppm, self.facing = x, y, ppm, facing

    def points(self, uv: Sequence[tuple[float, float]]) -> np.ndarray:
        pixels = np.asarray(uv) * (self.facing * self.ppm, -self.ppm) + (self.x, self.y)
        return np.round(pixels).astype(np.int32)

    def rect(self, u0: float, v0: float, u1: float, v1: float, colour: tuple,
             temp: float) -> Shape:
        return Shape(self.points([(u0, v0), (u1, v0), (u1, v1), (u0, v1)]), colour, temp)

    def ellipse(self, u: float, v: float, au: float, av: float, colour: tuple,
                temp: float) -> Shape:
        return Shape(self.points(_ellipse_uv(u, v, au, av)), colour, temp)

    def ring(self, u: float, v: float, radius: float, width_m: float, colour: tuple,
             temp: float) -> Shape:
        return self.line(_ellipse_uv(u, v, radius, radius), width_m, colour, temp, closed=True)

    def line(self, uv: Sequence[tuple[float, float]], width_m: float, colour: tuple,
             temp: float, closed: bool = False) -> Shape:
        points = self.points(list(uv) + ([uv[0]] if closed else []))
        return Shape(points, colour, temp, max(1, round(width_m * self.ppm)))

    def pixel(self, u: float, v: float) -> tuple[float, float]:
        return self.x + self.facing * u * self.ppm, self.y - v * self.ppm


def _ellipse_uv(u: float, v: float, au: float, av: float) -> np.ndarray:
    """20 points (20, 2) around an axis-aligned ellipse, in metres."""
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return np.stack([u + au * np.cos(angles), v + av * np.sin(angles)], axis=1)


@dataclass
class Street:
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


class Canvas:
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

    def draw(self, shape: Shape, ident: int) -> None:
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


def random_street(rng: np.random.Generator, height: int, width: int) -> Street:
    return Street(height=height, width=width, horizon=height * rng.uniform(0.36, 0.46),
                   vanish_x=width * rng.uniform(0.4, 0.6), centre=rng.uniform(-1.5, 1.5),
                   half_width=rng.uniform(3.5, 6.5),
                   guardrail_side=int(rng.choice([-1, 0, 1])), ambient=rng.uniform(2.0, 18.0))


def _ground_strip(street: Street, lateral0: float, lateral1: float) -> np.ndarray:
    """The ground between two lateral offsets: a triangle from the vanishing point."""
    bottom = 3.0 * street.height  # far below the image: fillPoly clips
    return np.round([(street.vanish_x, street.horizon), (street.x(bottom, lateral0), bottom),
                     (street.x(bottom, lateral1), bottom)]).astype(np.int32)


def _ground_quad(street: Street, lateral0: float, lateral1: float, depth0: float,
                 depth1: float, v0: float = 0.0, v1: float = 0.0) -> np.ndarray:
    """A patch of a plane along the road: laterals x depths, heights v0 (near) .. v1."""
    corners = []
    for lateral, depth, v in ((lateral0, depth0, v0), (lateral1, depth0, v1),
                              (lateral1, depth1, v1), (lateral0, depth1, v0)):
        y = street.row(depth)
        corners.append((street.x(y, lateral), y - v * street.ppm(y)))
    return np.round(corners).astype(np.int32)


def draw_background(canvas: Canvas, street: Street, rng: np.random.Generator) -> list:
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
        canvas.draw(Shape(_ground_strip(street, edge, edge + side * rng.uniform(2.5, 4.0)),
                           (160, 160, 155), amb + 1.5), sidewalk)
    road = canvas.entity(UNLABELED, texture=7.0)
    asphalt = int(rng.integers(70, 100))
    road_temp = amb + rng.uniform(2.0, 6.0)
    canvas.draw(Shape(_ground_strip(street, street.edge(-1), street.edge(1)),
                       (asphalt,) * 3, road_temp), road)
    curb = canvas.entity(SEG_CURVE, texture=5.0)
    for side in (-1, 1):
        edge = street.edge(side)
        canvas.draw(Shape(_ground_strip(street, edge, edge + side * 0.3), (195, 195, 190),
                           amb + 2.0), curb)
    for depth in np.arange(rng.uniform(2.0, 8.0), 80.0, 9.0):
        canvas.draw(Shape(_ground_quad(street, street.centre - 0.08, street.centre + 0.08,
                                        depth, depth + 3.0), (230, 230, 225), road_temp - 1.0),
                    road)
    if rng.random() < 0.3:
        _draw_bump(canvas, street, rng, road_temp)
    if street.guardrail_side:
        _draw_guardrail(canvas, street)
    return lights


def _draw_skyline(canvas: Canvas, street: Street, rng: np.random.Generator) -> list:
    """Flat buildings far away at the horizon, with windows; some windows lit at night."""
    lights = []
    x = rng.uniform(-0.1, 0.05) * street.width
    while x < street.width:
        depth = rng.uniform(70.0, 160.0)
        ppm = street.width / depth
        frame = LocalFrame(x, street.row(depth), ppm)
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


def _draw_bump(canvas: Canvas, street: Street, rng: np.random.Generator,
               road_temp: float) -> None:
    """A speed bump across the road: yellow and black stripes."""
    ident = canvas.entity(SEG_BUMP, texture=4.0)
    depth = rng.uniform(6.0, 25.0)
    left, right = street.edge(-1), street.edge(1)
    stripes = np.linspace(left, right, 13)
    for i, (lateral0, lateral1) in enumerate(zip(stripes[:-1], stripes[1:], strict=True)):
        colour = (225, 190, 30) if i % 2 else (25, 25, 25)
        canvas.draw(Shape(_ground_quad(street, lateral0, lateral1, depth, depth + 0.6),
                           colour, road_temp + 1.0), ident)


def _draw_guardrail(canvas: Canvas, street: Street) -> None:
    """A metal beam 0.45-0.8 m high along one road edge, with posts every 4 m."""
    ident = canvas.entity(SEG_GUARDRAIL, texture=3.0)
    side = street.guardrail_side
    lateral = street.edge(side) + side * 0.7
    amb = street.ambient
    for depth in np.arange(120.0, 1.0, -4.0):  # far to near
        y = street.row(depth)
        frame = LocalFrame(street.x(y, lateral), y, street.ppm(y))
        canvas.draw(frame.rect(-0.06, 0.0, 0.06, 0.78, (115, 115, 120), amb), ident)
    beam = np.concatenate([_ground_quad(street, lateral, lateral, 1.0, 150.0, 0.45, 0.45),
                           _ground_quad(street, lateral, lateral, 150.0, 1.0, 0.8, 0.8)])
    canvas.draw(Shape(np.array([beam[0], beam[3], beam[5], beam[6]], np.int32),
                       (175, 178, 182), amb - 1.0), ident)


def depth_map(canvas: Canvas, street: Street, on_ground: np.ndarray) -> np.ndarray:
    """Metres to every pixel (float32 (H, W)); inf for the sky."""
    rows = np.arange(street.height, dtype=np.float32)
    row_depth = CAMERA_HEIGHT * street.width / np.maximum(rows - street.horizon, 0.5)
    return np.where(on_ground, row_depth[:, None], canvas.per_pixel("depth"))


def ground_warmth(street: Street) -> np.ndarray:
    """Per row, deg C: sun-warmed ground is warmer near the camera (a smooth gradient)."""
    rows = np.arange(street.height, dtype=np.float32)
    return 2.5 * np.clip((rows - street.horizon) / (street.height - street.horizon), 0, 1)
