"""Opening any dataset by name: the RefCOCO family, the synthetic set, or a manifest folder.

Both kinds of index answer the same questions: ``splits``,
``samples(split)``, ``load(sample) -> (pixels, mask)`` and ``stats()``, so
datasets, ``vipa data`` and evaluation never ask which kind they hold.
"""

from __future__ import annotations

from pathlib import Path

from vipa.data.manifest import ManifestIndex, load_manifest
from vipa.data.refer import DATASETS, ReferIndex, find_image_dir, load_refs

MANIFEST = "jsonl"
DATASET_NAMES = (*DATASETS, MANIFEST)


def open_dataset(name: str, root: str | Path, split_by: str | None = None,
                 image_dir: str | Path | None = None,
                 strict: bool = True) -> ReferIndex | ManifestIndex:
    """The index of dataset ``name`` under ``root`` (a manifest folder for ``jsonl``).

    ``strict=False`` lists a manifest's malformed lines in ``index.problems``
    instead of raising at the first one.
    """
    if name == MANIFEST:
        return load_manifest(root, strict=strict)
    index = load_refs(root, name, split_by)
    index.image_dir = find_image_dir(root, name, image_dir)
    return index
