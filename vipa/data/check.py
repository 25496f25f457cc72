"""`vipa data check`: every problem of a dataset, one line each, before a run trips on it.

Files exist and decode, masks fit their image and are not empty, phrases are
not empty, ids are unique and no image belongs to two splits. Manifests name
their problems ``file:line``; the RefCOCO family names ref and sentence ids,
and every missing file with the path where vipa looked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vipa.data.generalized import refs_file
from vipa.data.images import read_image
from vipa.data.index import MANIFEST, open_dataset
from vipa.data.manifest import ManifestIndex, object_masks
from vipa.data.refer import check_dataset as refer_split_by
from vipa.data.refer import find_image_dir
from vipa.data.splits import VIEWS
from vipa.errors import DataError


@dataclass
class CheckReport:
    """What was checked and every problem found (``problems`` empty: the set is sound)."""

    dataset: str
    splits: list[str] = field(default_factory=list)
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def check(name: str, root: Path, split_by: str | None = None, image_dir: Path | None = None,
          on_item: Callable[[int], None] | None = None) -> CheckReport:
    """Check dataset ``name`` under ``root``; ``on_item(total)`` is called per object checked."""
    report = CheckReport(name)
    if name != MANIFEST:
        report.problems += _missing_refer_files(name, root, split_by, image_dir)
        if report.problems:
            return report
    index = open_dataset(name, root, split_by, image_dir, strict=False)
    report.problems += getattr(index, "problems", [])
    report.splits = index.splits
    checker = _check_manifest if isinstance(index, ManifestIndex) else _check_refer
    checker(index, report, on_item or (lambda total: None))
    return report


def _missing_refer_files(name: str, root: Path, split_by: str | None,
                         image_dir: Path | None) -> list[str]:
    split_by = refer_split_by(name, split_by)
    folder = Path(root).expanduser() / name
    problems = [f"missing {path} (the {what})" for path, what in (
        (refs_file(folder, name, split_by), f"refs of {name} split by {split_by}"),
        (folder / "instances.json", "COCO instances with the masks")) if not path.is_file()]
    try:
        find_image_dir(root, name, image_dir)
    except DataError as error:
        problems.append(str(error))
    return problems


def _image(path: Path, sizes: dict[Path, tuple[int, int] | str]) -> tuple[int, int] | str:
    """(height, width) of an image, decoded once, or the reason it cannot be read."""
    if path not in sizes:
        try:
            sizes[path] = read_image(path).shape[:2]
        except DataError as error:
            sizes[path] = str(error)
    return sizes[path]


def _check_manifest(index: ManifestIndex, report: CheckReport,
                    on_item: Callable[[int], None]) -> None:
    sizes: dict[Path, tuple[int, int] | str] = {}
    ids: dict[str, list[str]] = defaultdict(list)
    image_splits: dict[Path, set[str]] = defaultdict(set)
    total = sum(len(records) for records in index.records.values())
    for split in index.splits:
        for record in index.records[split]:
            report.samples += len(record.texts)
            image_splits[record.image].add(split)
            if record.record_id:
                ids[record.record_id].append(record.where)
            size = _image(record.image, sizes)
            if isinstance(size, str):
                report.problems.append(f"{record.where}: {size}")
            else:
                try:  # a generalized record may refer to none, but each object has pixels
                    masks = object_masks(record, *size, index.root)
                    report.problems += [
                        f"{record.where}: " + (f"masks[{i}] is empty" if record.generalized
                                               else "the mask is empty")
                        for i, mask in enumerate(masks) if not mask.any()]
                except DataError as error:
                    report.problems.append(str(error) if str(error).startswith(record.where)
                                           else f"{record.where}: {error}")
            on_item(total)
    report.problems += [f"{places[1]}: id {record_id!r} is also used at {places[0]}"
                        for record_id, places in ids.items() if len(places) > 1]
    report.problems += _shared_images(image_splits)


def _check_refer(index, report: CheckReport,  # noqa: ANN001 - a ReferIndex
                 on_item: Callable[[int], None]) -> None:
    sizes: dict[Path, tuple[int, int] | str] = {}
    image_splits: dict[Path, set[str]] = defaultdict(set)
    sent_ids = Counter(int(s["sent_id"]) for ref in index.refs for s in ref["sentences"])
    report.problems += [f"sentence id {sent_id} is used {count} times"
                        for sent_id, count in sent_ids.items() if count > 1]
    for ref in index.refs:
        where = f"ref {ref['ref_id']}"
        report.samples += len(ref["sentences"])
        info = index.images[ref["image_id"]]
        path = index.image_dir / str(info["file_name"])
        image_splits[path].add(ref["split"])
        size = _image(path, sizes)
        if isinstance(size, str):
            report.problems.append(f"{where}: {size}")
        elif size != (int(info["height"]), int(info["width"])):
            report.problems.append(f"{where}: image {path} is {size[1]}x{size[0]} but "
                                   f"instances.json says {info['width']}x{info['height']}")
        for ann_id in ref.get("targets", (ref["ann_id"],)):  # gRefCOCO: none or several
            try:
                if not index.mask(ann_id).any():
                    report.problems.append(f"{where}: the mask of annotation {ann_id} is empty")
            except DataError as error:
                report.problems.append(f"{where}: {error}")
        for sentence in ref["sentences"]:
            if not str(sentence.get("sent", sentence.get("raw", ""))).strip():
                report.problems.append(f"{where} sentence {sentence['sent_id']}: empty text")
        on_item(len(index.refs))
    report.problems += _shared_images(image_splits)


def _shared_images(image_splits: dict[Path, set[str]]) -> list[str]:
    """Images in more than one split; a view of a split (``VIEWS``) counts as that split."""
    return [f"image {path} is in splits {', '.join(sorted(splits))}: splits must not share "
            "images" for path, splits in image_splits.items()
            if len({VIEWS.get(split, split) for split in splits}) > 1]
