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
    else:  # star
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.05, r * 0.45)
    xs = obj.x + radii * np.cos(angles)
    ys = obj.y + radii * np.sin(angles)
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
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
        colour = np.array(COLOURS[obj.colour], dtype=np.float32)
        shade = (colour * 0.55).astype(np.uint8)
        canvas[inside] = colour.astype(np.uint8)
        if obj.texture == "striped":
            canvas[inside & stripes] = shade
        elif obj.texture == "dotted":
            canvas[inside & dots] = shade
    return canvas
