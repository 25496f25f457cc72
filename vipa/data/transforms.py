"""Resizing and training augmentations that keep the expression true.

A horizontal flip turns "the left dog" into a lie unless "left" becomes
"right"; a hue shift turns "the red ball" into a lie, so colour jitter here
only scales brightness, contrast and (slightly) saturation, which keep hue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_HORIZONTAL = {"left": "right", "leftmost": "rightmost", "lefthand": "righthand"}
_VERTICAL = {"top": "bottom", "topmost": "bottommost", "above": "below", "upper": "lower",
             "uppermost": "lowermost"}


def _pairs(table: dict[str, str]) -> dict[str, str]:
    both = dict(table)
    both.update({v: k for k, v in table.items() if v not in both})
    return both


_H_SWAP = _pairs(_HORIZONTAL)
_V_SWAP = _pairs(_VERTICAL)
_H_RE = re.compile(r"\b(" + "|".join(sorted(_H_SWAP, key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)
_V_RE = re.compile(r"\b(" + "|".join(sorted(_V_SWAP, key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)


def _swap(pattern: re.Pattern[str], table: dict[str, str], text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        new = table[word.lower()]
        if word.isupper():
            return new.upper()
        if word[0].isupper():
            return new.capitalize()
        return new

    return pattern.sub(replace, text)


def mentions_horizontal(text: str) -> bool:
    """Whether the text uses a left/right word, so a horizontal flip changes its meaning."""
    return _H_RE.search(text) is not None


def mentions_vertical(text: str) -> bool:
    """Whether the text uses a top/bottom word, so a vertical flip changes its meaning."""
    return _V_RE.search(text) is not None


def swap_horizontal_words(text: str) -> str:
    """left <-> right, leftmost <-> rightmost (case kept): the text of a mirrored image."""
    return _swap(_H_RE, _H_SWAP, text)


def swap_vertical_words(text: str) -> str:
    """top <-> bottom, above <-> below, upper <-> lower: the text of an upside-down image."""
    return _swap(_V_RE, _V_SWAP, text)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) float -> (3, size, size), bilinear, aspect ignored (as LAVT does)."""
    if image.shape[-2:] == (size, size):
        return image
    out = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """(1, H, W) 0/1 -> (1, size, size), nearest so the mask stays binary (and a map of
    class labels stays labels)."""
    if mask.shape[-2:] == (size, size):
        return mask
    return F.interpolate(mask[None].float(), size=(size, size), mode="nearest")[0]


@dataclass
class TrainAugment:
    """Flips that rewrite the text (or are skipped) and hue-preserving colour jitter.

    ``swap_words=False`` never flips an image whose text names a direction on
    the flipped axis; ``True`` flips and swaps the direction words. Random
    choices come from the ``generator`` passed in, so a seed fixes them. Every
    channel of ``mask`` (C, S, S) flips with the image.
    """

    hflip_p: float = 0.5
    vflip_p: float = 0.0
    swap_words: bool = True
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.1

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, text: str,
                 generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, str]:
        u = torch.rand(5, generator=generator)
        if u[0] < self.hflip_p and (self.swap_words or not mentions_horizontal(text)):
            image, mask = image.flip(-1), mask.flip(-1)
            text = swap_horizontal_words(text)
        if u[1] < self.vflip_p and (self.swap_words or not mentions_vertical(text)):
            image, mask = image.flip(-2), mask.flip(-2)
            text = swap_vertical_words(text)
        image = colour_jitter(image, 1 + self.brightness * (2 * float(u[2]) - 1),
                              1 + self.contrast * (2 * float(u[3]) - 1),
                              1 + self.saturation * (2 * float(u[4]) - 1))
        return image, mask, text


def colour_jitter(image: torch.Tensor, brightness: float, contrast: float,
                  saturation: float) -> torch.Tensor:
    """Scale brightness, contrast and saturation of a (3, H, W) [0, 1] image; hue is untouched.

    All three are blends with a grey image (black, mean grey, per-pixel grey),
    which move a colour along a line through grey and so keep its hue. Folded
    into one 3x3 matrix and an offset (the luma weights sum to 1), it is a
    single pass over the pixels.
    """
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype)
    mix = saturation * torch.eye(3, dtype=image.dtype) + (1 - saturation) * luma.expand(3, 3)
    offset = (1 - contrast) * brightness * float(image.mean())
    out = torch.einsum("ij,jhw->ihw", (contrast * brightness) * mix, image)
    return out.add_(offset).clamp_(0.0, 1.0)
