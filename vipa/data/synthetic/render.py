"""Drawing a synthetic scene: object outlines as COCO polygons, and the textured image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vipa.data.synthetic.scene import COLOURS, Obj, Scene


def polygon(obj: Obj) -> list[float]:
    """The outline as a flat COCO polygon [x0, y0, x1, y1, ...] (stars and circles too)."""
    r = obj.radius
    if obj.shape == "circle":
        angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        radii = np.full_like(angles, r)
    elif obj.shape == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(angles, r * 0.85 * np.sqrt(2))
    elif obj.shape == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full_like(angles, r * 1.1)
        # Shift down so the triangle's box is centred on (x, y).
        obj = replace(obj, y=obj.y + r * 1.1 * 0.25)
    elif obj.shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.05, r * 0.45)
    else:
        angles, radii = _heldout_outline(obj.shape, r)
    xs = obj.x + radii * np.cos(angles)
    ys = obj.y + radii * np.sin(angles)
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def _heldout_outline(shape: str, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Angles and radii of the held-out style's shapes (hexagon, diamond, cross, pentagon)."""
    if shape == "hexagon":
        return np.arange(6) * np.pi / 3, np.full(6, r)
    if shape == "pentagon":
        return -np.pi / 2 + np.arange(5) * 2 * np.pi / 5, np.full(5, r * 1.05)
    if shape == "diamond":  # a rhombus, taller than wide
        return np.arange(4) * np.pi / 2, np.array([r * 0.7, r * 1.1, r * 0.7, r * 1.1])
    if shape == "cross":  # a plus sign: 12 corners, arms a third of the width
        corners = np.array([(1, 1 / 3), (1 / 3, 1 / 3), (1 / 3, 1), (-1 / 3, 1), (-1 / 3, 1 / 3),
                            (-1, 1 / 3), (-1, -1 / 3), (-1 / 3, -1 / 3), (-1 / 3, -1),
                            (1 / 3, -1), (1 / 3, -1 / 3), (1, -1 / 3)]) * r * 0.95
        return np.arctan2(corners[:, 1], corners[:, 0]), np.hypot(corners[:, 0], corners[:, 1])
    raise ValueError(f"no outline for shape {shape!r}")


def render(scene: Scene, rng: np.random.Generator,
           colours: dict[str, tuple[int, int, int]] = COLOURS) -> np.ndarray:
    """Draw the scene: uint8 (S, S, 3), flat light background, textured shapes."""
    from PIL import Image, ImageDraw

    size = scene.image_size
    background = int(rng.integers(220, 246))
    canvas = np.full((size, size, 3), background, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, round(size / 21))
    stripes = ((xx + yy) % period) < period / 2
    dots = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 \
        <= (period / 4) ** 2
    for obj in scene.objects:
        layer = Image.new("L", (size, size), 0)
        ImageDraw.Draw(layer).polygon(polygon(obj), fill=255)
        inside = np.asarray(layer) > 127
        colour = np.array(colours[obj.colour], dtype=np.float32)
        shade = (colour * 0.55).astype(np.uint8)
        canvas[inside] = colour.astype(np.uint8)
        if obj.texture == "striped":
            canvas[inside & stripes] = shade
        elif obj.texture == "dotted":
            canvas[inside & dots] = shade
    return canvas
