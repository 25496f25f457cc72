"""`vipa data convert`: the refer layout to a manifest folder and back, sample for sample.

Refer -> manifest writes one record per object and expression kind, with its
phrases and the annotation's own polygon or RLE, images referenced where
they are; a gRefCOCO ref (none or several referents) becomes a record with
``masks``. Manifest -> refer writes ``<out>/refer/refs(custom).p``,
``instances.json`` and the images under ``images/`` (dataset ``refer``,
split ``custom``), masks as polygons or COCO RLE; a ``masks`` record becomes a
ref whose ``ann_id`` is a list (``[-1]`` for none), as gRefCOCO writes them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vipa.data.images import read_image
from vipa.data.index import MANIFEST, open_dataset
from vipa.data.manifest import ManifestIndex, Record, decode_entry
from vipa.errors import DataError, UsageError

CUSTOM_NAME, CUSTOM_SPLIT_BY = "refer", "custom"


def convert(name: str, root: Path, out: Path, *, split_by: str | None = None,
            image_dir: Path | None = None, on_item: Callable[[int], None] | None = None) -> Path:
    """Convert dataset ``name`` under ``root`` into the other layout under ``out``; return it."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty; convert into a new folder")
    index = open_dataset(name, root, split_by, image_dir)
    tick = on_item or (lambda total: None)
    if name == MANIFEST:
        return _manifest_to_refer(index, out, tick)
    return _refer_to_manifest(index, out, tick)


def _refer_to_manifest(index, out: Path, tick: Callable[[int], None]) -> Path:  # noqa: ANN001
    out.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {split: [] for split in index.splits}
    for ref in index.refs:
        image = index.image_dir / str(index.images[ref["image_id"]]["file_name"])
        masks = [_mask_entry(index.annotations[ann_id]["segmentation"])
                 for ann_id in ref.get("targets", (ref["ann_id"],))]
        mask = {"masks": masks} if "targets" in ref else masks[0]  # gRefCOCO: none or several
        by_kind: dict[str, list[str]] = {}
        for sentence in ref["sentences"]:
            text = str(sentence.get("sent", sentence.get("raw", ""))).strip()
            by_kind.setdefault(str(sentence.get("kind", "")), []).append(text)
        for kind, texts in by_kind.items():
            record = {"image": os.path.relpath(image, out), "texts": texts, **mask,
                      "id": f"{ref['ref_id']}" + (f"-{kind}" if len(by_kind) > 1 else "")}
            if kind:
                record["kind"] = kind
            lines[ref["split"]].append(json.dumps(record))
        tick(len(index.refs))
    for split, rows in lines.items():
        (out / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _mask_entry(segmentation: Any) -> dict[str, Any]:
    """An annotation's segmentation as a manifest mask: its polygon, or its RLE as JSON."""
    if isinstance(segmentation, list):
        return {"polygon": segmentation}
    counts = segmentation["counts"]
    return {"rle": {"size": list(segmentation["size"]),
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}}


def _manifest_to_refer(index: ManifestIndex, out: Path, tick: Callable[[int], None]) -> Path:
    folder = out / CUSTOM_NAME
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images: dict[Path, dict[str, Any]] = {}
    annotations, refs = [], []
    total = sum(len(r) for r in index.records.values())
    sent_id = 0
    for split in index.splits:
        for record in index.records[split]:
            info = images.get(record.image) or _copy_image(record, folder, len(images) + 1)
            images[record.image] = info
            ann_ids = []
            for entry in record.masks:
                ann_ids.append(len(annotations) + 1)
                annotations.append({"id": ann_ids[-1], "image_id": info["id"],
                                    "category_id": 1, "iscrowd": 0, "segmentation":
                                    _segmentation(record.where, entry, info, index.root)})
            sentences = []
            for text in record.texts:
                sent_id += 1
                sentences.append({"tokens": text.split(), "raw": text, "sent": text,
                                  "sent_id": sent_id, **({"kind": record.kind}
                                                         if record.kind else {})})
            # gRefCOCO's convention for none or several referents: lists, [-1] for none
            listed = (ann_ids or [-1]) if record.generalized else None
            refs.append({"ref_id": len(refs) + 1, "ann_id": listed or ann_ids[0],
                         "image_id": info["id"], "split": split,
                         "category_id": [1 if a != -1 else -1 for a in listed] if listed else 1,
                         "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences],
                         "file_name": info["file_name"]})
            tick(total)
    instances = {"images": list(images.values()), "annotations": annotations,
                 "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}
    (folder / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    with (folder / f"refs({CUSTOM_SPLIT_BY}).p").open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    return out


def _copy_image(record: Record, folder: Path, image_id: int) -> dict[str, Any]:
    height, width = read_image(record.image).shape[:2]
    file_name = f"{image_id:06d}{record.image.suffix.lower() or '.png'}"
    shutil.copyfile(record.image, folder / "images" / file_name)
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def _segmentation(where: str, entry: dict[str, Any], info: dict[str, Any], root: Path) -> Any:
    """A manifest mask as COCO segmentation: its polygon, its RLE, or a PNG encoded as RLE."""
    (key, value), = entry.items()
    if key in ("polygon", "rle"):
        return value
    from pycocotools import mask as mask_utils

    mask = decode_entry(where, entry, info["height"], info["width"], root)
    if not mask.any():
        raise DataError(f"{where}: the mask is empty")
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
