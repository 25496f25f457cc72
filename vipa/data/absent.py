"""Absent pairs: a training phrase shown with another image that has no object of its class.

A phrase that refers to one object of category c matches nothing in an image
with no object of category c. ``data.absent_pairs`` swaps that share of the
training samples' images for such an image of the same split, with an empty
mask, so every shape or class word meets scenes that lack it. One-object
phrases never ask "is there one here at all", only "which one fits best"
(docs/results.md, "Where no match fails"). On the built-in sets every phrase
names its referent's shape, so the pair is exact; on RefCOCO a phrase that
names no class ("the left one") may still fit something in the other image.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import torch

from vipa.data.refer import ReferIndex, Sample
from vipa.errors import ConfigError


class AbsentPairs:
    """Draws, for a one-object sample, the same phrase on an image lacking its category."""

    def __init__(self, index: object, samples: list[Sample], share: float) -> None:
        if not 0 <= share < 1:
            raise ConfigError(f"data.absent_pairs: {share!r} is not allowed; it must be in [0, 1)")
        if not isinstance(index, ReferIndex) or not index.categories:
            raise ConfigError(f"data.absent_pairs needs object categories (the RefCOCO family, "
                              f"gRefCOCO, the built-in sets); {getattr(index, 'name', index)!r} "
                              "has none")
        self.share = share
        self.on_image: dict[int, Sample] = {}  # image id -> a sample on it, to load its pixels
        for sample in samples:
            self.on_image.setdefault(sample.image_id, sample)
        present: dict[int, set[int]] = defaultdict(set)
        for ann in index.annotations.values():
            present[int(ann["image_id"])].add(int(ann["category_id"]))
        images = sorted(self.on_image)
        self.lacking = {int(c): [i for i in images if int(c) not in present[i]]
                        for c in index.categories}

    def draw(self, sample: Sample, generator: torch.Generator) -> Sample | None:
        """``sample``'s phrase on another image lacking its category, with no target, or
        None to keep the sample (not drawn, not one object, or no image lacks the class)."""
        if float(torch.rand((), generator=generator)) >= self.share:
            return None
        candidates = self.lacking.get(sample.category_id, [])
        if sample.target_count != 1 or not candidates:
            return None
        pick = candidates[int(torch.randint(len(candidates), (), generator=generator))]
        other = self.on_image[pick]
        return replace(sample, image_id=other.image_id, file_name=other.file_name,
                       ann_id=-1, targets=(), where=f"{sample.where} on image {pick} (absent pair)")
