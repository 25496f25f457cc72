"""The RefCOCO family on disk: refs pickle + COCO instances.json -> samples and masks.

Layout (the refer API's): ``<root>/<dataset>/refs(<splitBy>).p`` and
``<root>/<dataset>/instances.json``; images under one of the folders in
:func:`find_image_dir`. One sample is one (ref, sentence) pair, as in the
evaluation protocol. gRefCOCO (``grefcoco``) has ``grefs(unc).json`` (or ``.p``),
whose ``ann_id`` is a list, ``[-1]`` for a phrase that matches nothing; its mask is
the union of the listed objects (empty for none).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vipa.data.generalized import generalize, refs_file, sentences_per_kind
from vipa.data.images import read_image
from vipa.data.safe_pickle import load_plain_pickle
from vipa.errors import ConfigError, DataError, did_you_mean

log = logging.getLogger(__name__)

# dataset -> valid splitBy values, the first is the default.
DATASETS: dict[str, tuple[str, ...]] = {
    "refcoco": ("unc", "google"),
    "refcoco+": ("unc",),
    "refcocog": ("umd", "google"),
    "synthetic": ("vipa",),
    "synthetic-heldout": ("vipa",),  # the held-out style: checking a recipe, never tuning it
    "synthetic-gres": ("vipa",),  # the default set plus phrases matching several objects or none
    "synthetic-wide": ("vipa",),  # the default set's scenes said in a wider wording
    "refer": ("custom",),  # your own data in the refer layout (vipa data convert writes it)
    # Generalized RIS (GRES, CVPR 2023): grefs(unc).json, a phrase refers to 0, 1 or more objects
    "grefcoco": ("unc",),
}
# reworded: the built-in set's val objects in phrasings no other split uses (docs/data.md);
# minival: where runs choose their checkpoint, carved from train when a dataset has none
# (vipa.data.splits).
SPLITS: tuple[str, ...] = ("train", "minival", "val", "testA", "testB", "test", "reworded")


@dataclass(frozen=True)
class Sample:
    """One (ref, sentence) pair: what the model sees once per step."""

    sent_id: int
    ref_id: int
    ann_id: int
    image_id: int
    text: str
    file_name: str  # from instances.json, not the ref's own file_name
    category_id: int
    split: str = ""
    kind: str = ""  # the sentence's expression kind, where the dataset names one
    where: str = ""  # where it is written, for messages ("train.jsonl:12"; refer: ids)
    record_id: str = ""  # the manifest's own "id", when it gives one
    # Generalized sets (gRefCOCO): the annotations the phrase refers to, none or several;
    # None for the classic one-object sample, whose object is ``ann_id``.
    targets: tuple[int, ...] | None = None

    @property
    def target_count(self) -> int:
        """How many objects the phrase refers to (1 for a classic sample)."""
        return 1 if self.targets is None else len(self.targets)


def check_dataset(dataset: str, split_by: str | None = None) -> str:
    """Validate the dataset name and return the splitBy to use (its default if None)."""
    if dataset not in DATASETS:
        raise ConfigError(
            f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    valid = DATASETS[dataset]
    if split_by is None:
        return valid[0]
    if split_by not in valid:
        raise ConfigError(
            f"unknown splitBy {split_by!r} for {dataset}; valid: {', '.join(valid)}")
    return split_by


def check_split(split: str) -> str:
    if split not in SPLITS:
        by_case = {s.lower(): s for s in SPLITS}
        hint = (f" (did you mean {by_case[split.lower()]!r}?)" if split.lower() in by_case
                else did_you_mean(split, SPLITS))
        raise ConfigError(f"unknown split {split!r}{hint}; valid: {', '.join(SPLITS)}")
    return split


def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"corrupt JSON {path}: {error}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass
class ReferIndex:
    """Refs, images, annotations and categories of one dataset/splitBy, indexed by id."""

    root: Path
    dataset: str
    split_by: str
    refs: list[dict[str, Any]]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, dict[str, Any]]
    categories: dict[int, dict[str, Any]]
    refs_path: Path = field(default=Path())
    instances_path: Path = field(default=Path())
    image_dir: Path | None = None  # set by open_dataset (vipa.data.index)
    name: str = ""  # the dataset name; same as ``dataset``

    @property
    def splits(self) -> list[str]:
        """Splits present in the refs, in canonical order."""
        present = {ref["split"] for ref in self.refs}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def refs_in(self, split: str) -> list[dict[str, Any]]:
        check_split(split)
        if split not in self.splits:
            raise ConfigError(
                f"split {split!r} is not in {self.dataset}({self.split_by}); "
                f"present: {', '.join(self.splits) or 'none'}")
        return [ref for ref in self.refs if ref["split"] == split]

    def samples(self, split: str) -> list[Sample]:
        """One :class:`Sample` per (ref, sentence) of ``split``, in file order."""
        out = []
        for ref in self.refs_in(split):
            image = self.images[ref["image_id"]]
            for sentence in ref["sentences"]:
                text = sentence.get("sent", sentence.get("raw", ""))
                out.append(Sample(
                    sent_id=int(sentence["sent_id"]), ref_id=int(ref["ref_id"]),
                    ann_id=int(ref["ann_id"]), image_id=int(ref["image_id"]),
                    text=_as_text(text).strip(), file_name=_as_text(image["file_name"]),
                    category_id=int(ref["category_id"]), split=split,
                    kind=_as_text(sentence.get("kind", "")),
                    where=f"ref {ref['ref_id']} sentence {sentence['sent_id']}",
                    targets=ref.get("targets"),
                ))
        return out

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(pixels uint8 (H, W, 3), mask uint8 (H, W)) of a sample; DataError naming the file."""
        if self.image_dir is None:
            raise DataError(f"no image directory for {self.dataset}; pass --image-dir")
        info = self.images[sample.image_id]
        size = (int(info["width"]), int(info["height"]))
        path = self.image_dir / sample.file_name
        pixels = read_image(path, size)
        if sample.targets is None:
            mask = self.mask(sample.ann_id)
        else:  # the union of every referent; no referent: an empty mask
            mask = np.zeros((size[1], size[0]), dtype=np.uint8)
            for ann_id in sample.targets:
                mask |= self.mask(ann_id)
        if pixels.shape[:2] != mask.shape:
            raise DataError(f"image {path} is {pixels.shape[1]}x{pixels.shape[0]} but "
                            f"instances.json says {size[0]}x{size[1]}")
        return pixels, mask

    def mask(self, ann_id: int) -> np.ndarray:
        """The annotation's mask, uint8 (H, W) 0/1 at the image's size from instances.json."""
        ann = self.annotations[ann_id]
        image = self.images[ann["image_id"]]
        return decode_segmentation(ann["segmentation"], int(image["height"]),
                                   int(image["width"]))

    def stats(self) -> dict[str, dict[str, int]]:
        """Per split: distinct images, refs (objects) and sentences."""
        out: dict[str, dict[str, int]] = {}
        for split in self.splits:
            refs = [ref for ref in self.refs if ref["split"] == split]
            out[split] = {
                "images": len({ref["image_id"] for ref in refs}),
                "refs": len(refs),
                "sentences": sum(len(ref["sentences"]) for ref in refs),
            }
            if any("targets" in ref for ref in refs):  # generalized: sentences per kind
                out[split].update(sentences_per_kind(
                    (len(ref.get("targets", (ref["ann_id"],))), len(ref["sentences"]))
                    for ref in refs))
        return out


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygon list, uncompressed RLE or compressed RLE -> uint8 (H, W) 0/1 mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [list(map(float, p)) for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        counts = segmentation["counts"]
        rle = {"size": list(segmentation["size"]),
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise DataError(f"unsupported segmentation of type {type(segmentation).__name__}")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_utils.decode(rle)
    if mask.ndim == 3:  # a list of RLEs decodes to (H, W, N)
        mask = mask.max(axis=2)
    return np.ascontiguousarray(mask, dtype=np.uint8)


def load_refs(root: str | Path, dataset: str, split_by: str | None = None) -> ReferIndex:
    """Load ``refs(<splitBy>).p`` and ``instances.json`` of ``dataset`` under ``root``."""
    split_by = check_dataset(dataset, split_by)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist")
    folder = root / dataset
    refs_path = refs_file(folder, dataset, split_by)
    instances_path = folder / "instances.json"
    refs = _load_json(refs_path) if refs_path.suffix == ".json" else load_plain_pickle(refs_path)
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DataError(f"corrupt refs file {refs_path}: expected a list of dicts")
    instances = _load_json(instances_path)
    if not isinstance(instances, dict) or not {"images", "annotations"} <= instances.keys():
        raise DataError(f"corrupt instances file {instances_path}: "
                        "expected a COCO dict with images and annotations")
    try:
        images = {int(im["id"]): im for im in instances["images"]}
        annotations = {int(a["id"]): a for a in instances["annotations"]}
        categories = {int(c["id"]): c for c in instances.get("categories", [])}
        for ref in refs:
            ref["split"] = _as_text(ref["split"])
            if isinstance(ref["ann_id"], list):  # gRefCOCO: [-1] is "no target"
                generalize(ref)
            for key in ("ref_id", "ann_id", "image_id", "category_id"):
                ref[key] = int(ref[key])
            targets = ref.get("targets", (ref["ann_id"],))
            if ref["image_id"] not in images or any(a not in annotations for a in targets):
                raise KeyError(f"ref {ref['ref_id']} points to a missing image/annotation")
            for sentence in ref["sentences"]:
                sentence["sent_id"] = int(sentence["sent_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"corrupt refs/instances in {folder}: {error}") from None
    log.info("loaded %d refs of %s(%s) from %s", len(refs), dataset, split_by, folder)
    return ReferIndex(root=root, dataset=dataset, split_by=split_by, refs=refs,
                      images=images, annotations=annotations, categories=categories,
                      refs_path=refs_path, instances_path=instances_path, name=dataset)


def find_image_dir(root: str | Path, dataset: str, image_dir: str | Path | None = None) -> Path:
    """Where the images are: explicit ``image_dir``, else the first known layout that exists."""
    root = Path(root).expanduser()
    if image_dir is not None:
        path = Path(image_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"image directory {path} does not exist")
        return path
    candidates = [root / dataset / "images", root / "images" / "mscoco" / "images" / "train2014",
                  root / "images" / "train2014", root / "train2014"]
    for path in candidates:
        if path.is_dir():
            return path
    raise DataError("no image directory found; tried "
                    + ", ".join(str(p) for p in candidates) + " (or pass --image-dir)")
