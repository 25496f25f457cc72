"""Pictures of masks: prediction overlays, VEG relevance heatmaps, dataset samples.

Everything returns a PIL image at the size of the image it draws on, so the
callers (``vipa predict``, ``vipa data show``) only decide where to save it.
"""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vipa.inference.masks import resize_bilinear

_TINT = np.array([255, 64, 32], dtype=np.float32)
_CONTOUR = (255, 255, 0)
_SAMPLE_TINT = np.array([0, 200, 255], dtype=np.float32)
_SAMPLE_OUTLINE = (255, 0, 200)


def outline(mask: np.ndarray, width: int, *, outside: bool = False) -> np.ndarray:
    """A ``width``-pixel band along a bool mask's edge: its inner rim, or the ring outside it.

    The band is a square erosion (or dilation) of the mask, done one axis at a
    time with running sums, so its cost grows with the pixels, not with the
    band's width (a 12 MP photo's 16-pixel rim took 16 s as a 2-D rank filter).
    """
    mask = np.asarray(mask, dtype=bool)
    band = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return band
    # Only the mask's box (grown by the band's width) can hold the band: work on that crop.
    grow = width if outside else 0
    top, left = max(rows[0] - grow, 0), max(cols[0] - grow, 0)
    bottom, right = min(rows[-1] + grow + 1, mask.shape[0]), min(cols[-1] + grow + 1, mask.shape[1])
    crop = mask[top:bottom, left:right]
    if outside:  # the ring: beyond the crop is outside the mask, beyond the frame too
        padded = np.pad(~crop, 1, constant_values=True)
        band[top:bottom, left:right] = ~_eroded(padded, width)[1:-1, 1:-1] & ~crop
        return band
    # The rim: beyond a side of the crop inside the picture is outside the mask (False);
    # beyond the picture's frame counts as set (True), so the frame draws no rim.
    edges = ((top == 0, bottom == mask.shape[0]), (left == 0, right == mask.shape[1]))
    padded = np.pad(crop, 1, constant_values=edges)
    band[top:bottom, left:right] = crop & ~_eroded(padded, width)[1:-1, 1:-1]
    return band


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose whole (2 radius + 1)-square neighbourhood is set; beyond the image counts
    as set, so a mask's rim is drawn where it meets the mask's outside, not the frame."""
    for axis in (0, 1):
        mask = np.moveaxis(_eroded_along_first(np.moveaxis(mask, axis, 0), radius), 0, axis)
    return mask


def _eroded_along_first(mask: np.ndarray, radius: int) -> np.ndarray:
    holes = np.zeros((mask.shape[0] + 2 * radius + 1, *mask.shape[1:]), dtype=np.int32)
    np.cumsum(~mask, axis=0, dtype=np.int32, out=holes[radius + 1:mask.shape[0] + radius + 1])
    holes[mask.shape[0] + radius + 1:] = holes[mask.shape[0] + radius]
    window = 2 * radius + 1
    return holes[window:] == holes[:-window]


def _tint(pixels: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Blend ``colour`` half into the masked pixels of uint8 ``pixels``, in place; only the
    masked pixels are copied (a 12 MP photo is never held as float)."""
    pixels[mask] = ((pixels[mask].astype(np.uint16) + colour.astype(np.uint16)) // 2).astype(
        np.uint8)


def caption_font(width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The captions' font, sized to the picture: readable on a phone photo and a 96 px one."""
    return ImageFont.load_default(size=max(10, min(64, width // 40)))


def wrap_caption(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:  # noqa: ANN001
    """``text`` in lines no wider than ``width`` pixels, broken between words (a word longer
    than the line is broken where it must)."""
    lines: list[str] = []
    for word in text.split() or [""]:
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
            continue
        while len(word) > 1 and draw.textlength(word, font=font) > width:
            cut = max(1, int(len(word) * width / draw.textlength(word, font=font)))
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines


def _draw_captions(picture: Image.Image, captions: list[str],
                   swatches: list[tuple[int, int, int]] | None = None) -> None:
    """Captions in white on black boxes from the top-left corner, each wrapped to the width;
    ``swatches``: a colour square before each caption (a legend)."""
    draw = ImageDraw.Draw(picture)
    font = caption_font(picture.width)
    size = font.size if hasattr(font, "size") else 10
    pad = max(2, size // 5)
    indent = pad + (size + pad if swatches else 0)
    top = pad
    for i, caption in enumerate(captions):
        for j, line in enumerate(wrap_caption(draw, caption, font, picture.width - indent - pad)):
            left, upper, right, bottom = draw.textbbox((indent, top), line, font=font)
            draw.rectangle((0, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
            if swatches and j == 0:
                draw.rectangle((pad, top, pad + size - 1, top + size - 1), fill=swatches[i])
            draw.text((indent, top), line, fill=(255, 255, 255), font=font)
            top = bottom + pad


def draw_overlay(image: np.ndarray, mask: np.ndarray, caption: str) -> Image.Image:
    """RGB image with the mask tinted, its contour outlined and the phrase as a caption."""
    pixels = np.array(image, dtype=np.uint8)
    _tint(pixels, mask, _TINT)
    pixels[outline(mask, max(1, round(max(image.shape[:2]) / 256)))] = _CONTOUR
    overlay = Image.fromarray(pixels, mode="RGB")
    _draw_captions(overlay, [caption])
    return overlay


PALETTE = ((255, 64, 32), (32, 160, 255), (60, 200, 60), (250, 200, 20), (200, 60, 220),
           (0, 210, 200), (255, 120, 180), (140, 100, 40))


def draw_overlays(image: np.ndarray, masks: list[np.ndarray], captions: list[str]) -> Image.Image:
    """Several phrases' masks on one image, one colour each, with a legend of the phrases."""
    canvas = np.array(image, dtype=np.uint8)
    width = max(1, round(max(image.shape[:2]) / 256))
    for i, mask in enumerate(masks):
        _tint(canvas, mask, np.array(PALETTE[i % len(PALETTE)], dtype=np.float32))
    for i, mask in enumerate(masks):
        canvas[outline(mask, width)] = PALETTE[i % len(PALETTE)]
    picture = Image.fromarray(canvas, mode="RGB")
    _draw_captions(picture, captions, [PALETTE[i % len(PALETTE)] for i in range(len(captions))])
    return picture


def draw_heatmap(image: np.ndarray, relevance: np.ndarray, k: int,
                 caption: str = "") -> Image.Image:
    """The VEG relevance map (inferno) over the image, retrieved top-``k`` token cells boxed,
    with the phrase as a caption.

    In eval mode retrieval is the plain top-K of relevance (no Gumbel noise),
    so the boxed cells are exactly the tokens the decoder attended to.
    """
    from matplotlib import colormaps  # matplotlib is slow to import; only heatmaps need it

    height, width = image.shape[:2]
    relevance = np.asarray(relevance, dtype=np.float32)
    grid_h, grid_w = relevance.shape
    low, high = float(relevance.min()), float(relevance.max())
    scaled = (relevance - low) / max(high - low, 1e-6)
    full = np.clip(resize_bilinear(scaled, (height, width)), 0, 1)
    colours = colormaps["inferno"](full)[..., :3] * 255.0
    blended = (0.45 * image.astype(np.float32) + 0.55 * colours).astype(np.uint8)
    canvas = Image.fromarray(blended, mode="RGB")
    draw = ImageDraw.Draw(canvas)
    cell_w, cell_h = width / grid_w, height / grid_h
    # argsort of the negated scores, stable: the first k cells of the top-k, best first.
    best = np.argsort(-relevance.ravel(), kind="stable")[: min(k, grid_h * grid_w)] if k else []
    for index in best:
        row, col = divmod(int(index), grid_w)
        draw.rectangle((col * cell_w, row * cell_h, (col + 1) * cell_w - 1,
                        (row + 1) * cell_h - 1), outline=(0, 255, 255),
                       width=max(1, round(max(height, width) / 256)))
    if caption:
        _draw_captions(canvas, [caption])
    return canvas


def draw_sample(pixels: np.ndarray, mask: np.ndarray, text: str, scale: int = 1) -> Image.Image:
    """Image with the mask outlined and lightly tinted, the rest faded, and the caption below.

    The tint is light and the outside is faded rather than the object painted
    over, so the object's own colour (often what the text names) stays visible.
    """
    image = pixels.astype(np.float32)
    inside = mask.astype(bool)
    image[inside] = 0.85 * image[inside] + 0.15 * _SAMPLE_TINT
    image[~inside] = 0.5 * image[~inside] + 0.5 * 255
    canvas = image.round().astype(np.uint8)
    if scale > 1:  # nearest-neighbour enlargement keeps the mask's pixels visible
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
        inside = inside.repeat(scale, axis=0).repeat(scale, axis=1)
    canvas[outline(inside, max(1, round(canvas.shape[1] / 128)), outside=True)] = _SAMPLE_OUTLINE
    picture = Image.fromarray(canvas)

    font_size = max(10, picture.width // 24)
    font = ImageFont.load_default(size=font_size)
    chars = max(8, int(picture.width / (0.6 * font_size)))
    lines = textwrap.wrap(text, chars) or [""]
    line_height = font_size + 4
    result = Image.new("RGB", (picture.width, picture.height + line_height * len(lines) + 8),
                       (255, 255, 255))
    result.paste(picture, (0, 0))
    draw = ImageDraw.Draw(result)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 4 + i * line_height), line, fill=(0, 0, 0), font=font)
    return result
