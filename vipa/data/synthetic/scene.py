"""Scenes of the synthetic set: the shapes, colours and sizes, and how objects are placed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vipa.errors import DataError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 185),
}
SIZES: tuple[str, ...] = ("small", "big")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
# Object counts per split: testA sparse, testB crowded.
OBJECT_COUNTS: dict[str, tuple[int, int]] = {
    "train": (2, 4), "val": (2, 4), "testA": (2, 3), "testB": (4, 4)}
# Radius as a share of the image side: small ~24 %, big ~36 % of the side across.
RADIUS = {"small": 0.12, "big": 0.18}
# Position words need this clear a gap (share of the side) to count as true.
MARGIN = 0.08


@dataclass(frozen=True)
class Obj:
    """One shape in a scene; (x, y) is its centre in pixels, y grows downwards."""

    shape: str
    colour: str
    size: str
    texture: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    image_size: int

    @property
    def margin(self) -> float:
        return MARGIN * self.image_size


def has_lookalike(scene: Scene, index: int) -> bool:
    """Whether another object shares the target's shape or colour (the text is needed)."""
    target = scene.objects[index]
    return any(o.shape == target.shape or o.colour == target.colour
               for i, o in enumerate(scene.objects) if i != index)


def sample_scene(rng: np.random.Generator, n_objects: int, image_size: int,
                 shape_names: Sequence[str] = SHAPES,
                 colour_names: Sequence[str] = tuple(COLOURS)) -> Scene:
    """Non-overlapping shapes drawn from a few shapes and colours, so lookalikes are common."""
    shapes = rng.choice(len(shape_names), size=int(rng.integers(2, 4)), replace=False)
    colours = rng.choice(len(colour_names), size=int(rng.integers(2, 4)), replace=False)
    gap = 0.02 * image_size
    for _ in range(100):
        objects: list[Obj] = []
        for _ in range(n_objects):
            size = SIZES[int(rng.integers(2))]
            radius = RADIUS[size] * image_size
            for _ in range(60):
                x, y = rng.uniform(radius + gap, image_size - radius - gap, size=2)
                if all((x - o.x) ** 2 + (y - o.y) ** 2 >= (radius + o.radius + gap) ** 2
                       for o in objects):
                    break
            else:
                break
            texture = TEXTURES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
            objects.append(Obj(
                shape=shape_names[int(rng.choice(shapes))],
                colour=colour_names[int(rng.choice(colours))],
                size=size, texture=texture, x=round(float(x), 2), y=round(float(y), 2),
                radius=round(radius, 2)))
        if len(objects) == n_objects:
            return Scene(tuple(objects), image_size)
    raise DataError(f"cannot place {n_objects} objects in a {image_size}px image")
