"""Category maps: every object of an image painted with its class, for ``loss.category``.

A referring phrase's mask teaches the encoder an object's class only when the
phrase turns on it; on the built-in sets the encoder names an object's shape
with a linear probe 0.56-0.77 of the time and its colour 0.93-1.00
(docs/results.md, "Why a shape the scene lacks is said present"). The category
map gives every object of every training image its class as a per-cell
target. Classes are numbered 1..C in the order of the dataset's category ids;
0 is the background. Objects are painted largest first, so a smaller object
lying on a larger one keeps its own class.
"""

from __future__ import annotations

import numpy as np

from vipa.data.refer import ReferIndex, decode_segmentation
from vipa.errors import ConfigError


def has_categories(index: object) -> bool:
    """Whether ``index`` names its objects' classes (the refer layout with categories)."""
    return isinstance(index, ReferIndex) and bool(index.categories)


class CategoryMaps:
    """The class of every pixel of an image of ``index`` (0: no object)."""

    def __init__(self, index: object) -> None:
        if not has_categories(index):
            raise ConfigError(f"loss.category needs object categories (the RefCOCO family, "
                              f"gRefCOCO, the built-in sets); {getattr(index, 'name', index)!r} "
                              "has none")
        self.index = index
        self.label = {int(c): i + 1 for i, c in enumerate(sorted(index.categories))}
        if len(self.label) > 255:  # the dataset keeps its maps as uint8
            raise ConfigError(f"loss.category: {len(self.label)} categories; at most 255")
        self.on_image: dict[int, list[dict]] = {}
        for ann in index.annotations.values():
            self.on_image.setdefault(int(ann["image_id"]), []).append(ann)

    @property
    def classes(self) -> int:
        """How many object classes (the background not counted)."""
        return len(self.label)

    def paint(self, image_id: int) -> np.ndarray:
        """int64 (H, W): the class of the object at each pixel, 0 where there is none."""
        info = self.index.images[image_id]
        height, width = int(info["height"]), int(info["width"])
        out = np.zeros((height, width), dtype=np.int64)
        masks = [(decode_segmentation(ann["segmentation"], height, width),
                  self.label.get(int(ann["category_id"]), 0))
                 for ann in self.on_image.get(image_id, [])]
        for mask, label in sorted(masks, key=lambda pair: -int(pair[0].sum())):
            out[mask > 0] = label
        return out
