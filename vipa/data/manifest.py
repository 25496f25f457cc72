"""Your own data: a folder of JSON-lines manifests, one file per split (``--data jsonl``).

``<root>/train.jsonl``, ``val.jsonl`` and optionally ``test*.jsonl`` (any
``NAME.jsonl`` is split ``NAME``), one object per line::

    {"image": "photos/dog.jpg", "text": "the dog on the left", "mask": "masks/dog.png"}
    {"image": "/abs/cat.jpg", "texts": ["the cat", "the grey cat"],
     "polygon": [[x1, y1, x2, y2, ...], ...], "id": "cat-1"}
    {"image": "a.jpg", "text": "the cup", "rle": {"size": [h, w], "counts": "..."}}

    {"image": "b.jpg", "text": "all the cups", "masks": [{"mask": "m/1.png"}, {"rle": ...}]}
    {"image": "b.jpg", "text": "the green cup", "masks": []}

Relative paths resolve against ``<root>``. The mask is exactly one of
``mask`` (a PNG, 0 = background, anything else = object), ``polygon`` (COCO
polygons in pixels) or ``rle`` (COCO RLE, compressed or not); or ``masks``, a
list of such objects, one per object the phrase refers to, empty when it
refers to none (generalized RIS, as gRefCOCO: the sample's mask is their
union). ``kind`` (optional) groups the evaluation's breakdown. One sample per
(record, text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vipa.data.generalized import sentences_per_kind
from vipa.data.images import read_image
from vipa.data.refer import SPLITS, Sample, decode_segmentation
from vipa.errors import DataError

MASK_KEYS = ("mask", "polygon", "rle")


@dataclass
class Record:
    """One manifest line: an object of an image with its phrases and its mask."""

    where: str  # "train.jsonl:12"
    image: Path
    texts: list[str]
    masks: list[dict[str, Any]]  # each exactly one of MASK_KEYS; one per referent
    record_id: str
    kind: str = ""
    generalized: bool = False  # given as "masks": none, one or several referents

    @property
    def targets(self) -> tuple[int, ...] | None:
        """:attr:`Sample.targets`: the referents' positions in ``masks``; None when classic."""
        return tuple(range(len(self.masks))) if self.generalized else None


def parse_record(data: Any, root: Path, where: str) -> Record:
    """A Record from one decoded JSON line; DataError naming ``where`` for anything else."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    image = data.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DataError(f'{where}: needs "image": a path to the image file')
    texts = data.get("texts", [data["text"]] if "text" in data else None)
    if not isinstance(texts, list) or not texts:
        raise DataError(f'{where}: needs "text" (a phrase) or "texts" (a list of phrases)')
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise DataError(f"{where}: a phrase is empty; every text needs words")
    generalized = "masks" in data
    if generalized:
        if any(key in data for key in MASK_KEYS):
            raise DataError(f'{where}: give "masks" (a list) or one of "mask", "polygon", '
                            '"rle", not both')
        if not isinstance(data["masks"], list):
            raise DataError(f'{where}: "masks" must be a list, one entry per object '
                            "([] when the phrase refers to none)")
        masks = [_one_mask(entry, f"{where} masks[{i}]") for i, entry in
                 enumerate(data["masks"])]
    else:
        masks = [_one_mask(data, where, ' (or "masks", a list)')]
    path = Path(image).expanduser()
    record_id = data.get("id", "")
    return Record(where, path if path.is_absolute() else root / path,
                  [" ".join(t.split()) for t in texts], masks,
                  str(record_id) if record_id != "" else "", str(data.get("kind", "")),
                  generalized)


def _one_mask(data: Any, where: str, also: str = "") -> dict[str, Any]:
    """The one of MASK_KEYS ``data`` holds, as ``{key: value}``; DataError for none or two."""
    keys = [key for key in MASK_KEYS if key in data] if isinstance(data, dict) else []
    if len(keys) != 1:
        raise DataError(f'{where}: needs exactly one of "mask" (a PNG), "polygon" or "rle"'
                        f"{also}, found {', '.join(keys) or 'none'}")
    return {keys[0]: data[keys[0]]}


def record_mask(record: Record, height: int, width: int, root: Path) -> np.ndarray:
    """The record's mask (the union of its objects'), uint8 (H, W) 0/1 at the image's size;
    DataError when it cannot be."""
    union = np.zeros((height, width), dtype=np.uint8)
    for mask in object_masks(record, height, width, root):
        union |= mask
    return union


def object_masks(record: Record, height: int, width: int, root: Path) -> list[np.ndarray]:
    """Each referent's mask, uint8 (H, W) 0/1; DataError naming the line when one cannot be."""
    return [decode_entry(f"{record.where} masks[{i}]" if record.generalized else record.where,
                    entry, height, width, root) for i, entry in enumerate(record.masks)]


def decode_entry(where: str, entry: dict[str, Any], height: int, width: int,
                 root: Path) -> np.ndarray:
    """One mask entry (``{"mask"|"polygon"|"rle": ...}``) as uint8 (H, W) 0/1; DataError
    naming ``where`` when it cannot be."""
    (key, value), = entry.items()
    if key == "mask":
        if not isinstance(value, str):
            raise DataError(f'{where}: "mask" must be the path of a PNG')
        path = Path(value).expanduser()
        mask = read_image(path if path.is_absolute() else root / path)[..., 0] > 0
    elif key == "polygon":
        if not isinstance(value, list) or not all(isinstance(p, list) for p in value):
            raise DataError(f'{where}: "polygon" must be a list of [x1, y1, x2, y2, ...]')
        mask = decode_segmentation(value, height, width) > 0
    else:
        if not isinstance(value, dict) or "size" not in value or "counts" not in value:
            raise DataError(f'{where}: "rle" must be {{"size": [h, w], "counts": ...}}')
        if list(value["size"]) != [height, width]:
            raise DataError(f"{where}: the RLE is {value['size'][1]}x{value['size'][0]} "
                            f"but the image is {width}x{height}")
        mask = decode_segmentation(value, height, width) > 0
    if mask.shape != (height, width):
        raise DataError(f"{where}: the mask is {mask.shape[1]}x{mask.shape[0]} but the "
                        f"image is {width}x{height}")
    return mask.astype(np.uint8)


@dataclass
class ManifestIndex:
    """Every split of a manifest folder, parsed; ``problems`` holds lines that were skipped."""

    root: Path
    records: dict[str, list[Record]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    name: str = "jsonl"
    split_by: str = "manifest"

    @property
    def splits(self) -> list[str]:
        order = {split: i for i, split in enumerate(SPLITS)}  # as the refer layout orders them
        return sorted(self.records, key=lambda s: (order.get(s, len(order)), s))

    def samples(self, split: str) -> list[Sample]:
        if split not in self.records:
            raise DataError(f"no {split}.jsonl in {self.root}; present: "
                            f"{', '.join(f'{s}.jsonl' for s in self.splits) or 'none'}")
        images: dict[Path, int] = {}
        for name in self.splits:  # image ids shared across splits, to find shared images
            for record in self.records[name]:
                images.setdefault(record.image, len(images) + 1)
        first = sum(len(r.texts) for s in self.splits[: self.splits.index(split)]
                    for r in self.records[s])
        out = []
        for number, record in enumerate(self.records[split]):
            for text in record.texts:
                out.append(Sample(
                    sent_id=first + len(out) + 1, ref_id=number, ann_id=number,
                    image_id=images[record.image], text=text, file_name=str(record.image),
                    category_id=0, split=split, kind=record.kind, where=record.where,
                    record_id=record.record_id, targets=record.targets))
        return out

    def record(self, sample: Sample) -> Record:
        return self.records[sample.split][sample.ann_id]

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(pixels uint8 (H, W, 3), mask uint8 (H, W)) of a sample."""
        record = self.record(sample)
        pixels = read_image(record.image)
        return pixels, record_mask(record, *pixels.shape[:2], self.root)

    def stats(self) -> dict[str, dict[str, int]]:
        out = {}
        for split in self.splits:
            records = self.records[split]
            out[split] = {"images": len({r.image for r in records}), "refs": len(records),
                          "sentences": sum(len(r.texts) for r in records)}
            if any(r.generalized for r in records):
                out[split].update(sentences_per_kind((len(r.masks), len(r.texts))
                                                     for r in records))
        return out


def load_manifest(root: str | Path, strict: bool = True) -> ManifestIndex:
    """Parse ``<root>/*.jsonl``; a malformed line raises (``strict``) or goes to ``problems``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist")
    files = sorted(root.glob("*.jsonl"))
    if not files:
        raise DataError(f"no manifest in {root}: expected train.jsonl, val.jsonl (and "
                        "optionally test*.jsonl); see docs/data.md")
    index = ManifestIndex(root)
    for path in files:
        records = index.records.setdefault(path.stem, [])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read {path}: {error}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{where}: not JSON ({error.msg})") from None
                records.append(parse_record(data, root, where))
            except DataError as error:
                if strict:
                    raise
                index.problems.append(str(error))
    return index
