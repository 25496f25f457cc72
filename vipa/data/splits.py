"""Which samples a split holds: the dataset's own splits, and ``minival`` carved from train.

A run chooses its best checkpoint on ``data.val_split``. Choosing on the split
a result is reported on makes the result optimistic, so the ``cpu`` recipe
chooses on ``minival``: the dataset's own split of that name when it has one,
otherwise a fixed share of the *training images* (every sentence about them),
picked by a hash of the image so the choice never depends on order or seed.
A run that chooses on a carved minival leaves those images out of training.
"""

from __future__ import annotations

import zlib
from pathlib import PurePath
from typing import Protocol

from vipa.data.refer import Sample

MINIVAL = "minival"
# Splits that are another split's images said in other words: they share its images by
# design (the built-in set's reworded split is val's objects in new phrasings).
VIEWS: dict[str, str] = {"reworded": "val"}
# Share of the training images a carved minival takes: 258 of the built-in set's
# 4000 training sentences, enough to rank six validations.
MINIVAL_PER_MILLE = 75


class SplitIndex(Protocol):
    """What :func:`split_samples` needs of a dataset index (ReferIndex, ManifestIndex)."""

    @property
    def splits(self) -> list[str]: ...

    def samples(self, split: str) -> list[Sample]: ...


def _image_hash(sample: Sample) -> int:
    # The file's own name, not its folder: a manifest names images by absolute path, and
    # the images a minival takes must not change when the dataset folder moves.
    return zlib.crc32(f"{sample.image_id}:{PurePath(sample.file_name).name}".encode())


def minival_images(train: list[Sample]) -> set[int]:
    """Hashes of the training images a carved minival takes: a fixed share, at least one."""
    hashes = {_image_hash(s) for s in train}
    chosen = {h for h in hashes if h % 1000 < MINIVAL_PER_MILLE}
    return chosen or ({min(hashes, key=lambda h: h % 1000)} if hashes else set())


def carves_minival(index: SplitIndex, split: str) -> bool:
    """Whether ``split`` is a minival this dataset does not have, so it is carved from train."""
    return split == MINIVAL and MINIVAL not in index.splits


def split_samples(index: SplitIndex, split: str, *, minival_held_out: bool = False
                  ) -> list[Sample]:
    """The samples of ``split``; ``minival_held_out``: train leaves a carved minival out."""
    if carves_minival(index, split):
        train = index.samples("train")
        held = minival_images(train)
        # Samples keep split "train": where they live, which loaders look them up by.
        return [s for s in train if _image_hash(s) in held]
    samples = index.samples(split)
    if split == "train" and minival_held_out and carves_minival(index, MINIVAL):
        held = minival_images(samples)
        samples = [s for s in samples if _image_hash(s) not in held]
    return samples
