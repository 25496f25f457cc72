"""Writing the synthetic set in the RefCOCO format: JPEG images, ``instances.json``, refs pickle.

Splits: ``train`` and ``val`` scenes hold 2-4 objects; ``testA`` holds
sparse scenes (2-3 objects), ``testB`` crowded ones (4 objects), the way
RefCOCO splits its test set into two kinds of images. A style with a
reworded wording adds ``reworded``: the val objects and expressions again,
said in phrasings no other split uses. Same seed and sizes give the same
bytes.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vipa.data.synthetic.groups import Group, members, nothing, several
from vipa.data.synthetic.language import KINDS, Expression, describe
from vipa.data.synthetic.render import polygon, render
from vipa.data.synthetic.scene import OBJECT_COUNTS, Obj, Scene, has_lookalike, sample_scene
from vipa.data.synthetic.style import DEFAULT, STYLES, Style
from vipa.errors import DataError

log = logging.getLogger(__name__)

# Bump when the generator's output changes, so caches are regenerated.
SYNTHETIC_VERSION = 3
SPLIT_BY = "vipa"
GREFCOCO_SPLIT_BY = "unc"
LAYOUTS = ("refer", "grefcoco")


def _listed(value: int | list[int]) -> list[int]:
    return value if isinstance(value, list) else [value]


class _CocoWriter:
    """Accumulates images, annotations and refs with running ids; writes the files at the end."""

    def __init__(self, folder: Path, image_size: int, style: Style,
                 words: np.random.Generator, grefcoco: bool = False) -> None:
        from pycocotools import mask as mask_utils

        self.mask_utils = mask_utils
        self.folder, self.image_size, self.style = folder, image_size, style
        self.words = words  # draws the wording, apart from the scenes' stream
        self.grefcoco = grefcoco  # gRefCOCO's files: grefs(unc).json, images/train2014
        self.image_dir = folder.parent / "images" / "train2014" if grefcoco else folder / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []
        self.ids = {"image": 0, "ann": 0, "ref": 0, "sent": 0}

    def add_image(self, split: str, pixels: np.ndarray) -> int:
        from PIL import Image

        self.ids["image"] += 1
        image_id = self.ids["image"]
        file_name = f"synthetic_{image_id:06d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        (self.image_dir / file_name).write_bytes(buffer.getvalue())
        self.images.append({"id": image_id, "file_name": file_name, "height": self.image_size,
                            "width": self.image_size, "split": split})
        return image_id

    def add_object(self, image_id: int, obj: Obj) -> int:
        self.ids["ann"] += 1
        poly = polygon(obj)
        size = self.image_size
        rle = self.mask_utils.frPyObjects([poly], size, size)[0]
        self.annotations.append({
            "id": self.ids["ann"], "image_id": image_id,
            "category_id": self.style.shapes.index(obj.shape) + 1, "segmentation": [poly],
            "area": float(self.mask_utils.area(rle)),
            "bbox": [round(float(v), 2) for v in self.mask_utils.toBbox(rle)],
            "iscrowd": 0,
            "attributes": {"colour": obj.colour, "size": obj.size, "texture": obj.texture,
                           "center": [obj.x, obj.y], "radius": obj.radius},
        })
        return self.ids["ann"]

    def add_ref(self, split: str, image_id: int, ann_id: int, obj: Obj,
                expressions: list[Expression]) -> int:
        self.ids["ref"] += 1
        sentences = []
        for expression in expressions:
            self.ids["sent"] += 1
            text = self.style.text(expression, self.words, reworded=split == "reworded")
            sentences.append({"tokens": text.split(), "raw": text, "sent": text,
                              "sent_id": self.ids["sent"], "kind": expression.kind})
        self.refs.append({
            "ref_id": self.ids["ref"], "ann_id": ann_id, "image_id": image_id,
            "split": split, "category_id": self.style.shapes.index(obj.shape) + 1,
            "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences],
            # The ref's own name differs from the image's, as in RefCOCO.
            "file_name": f"synthetic_{image_id:06d}_{ann_id}.jpg",
        })
        return len(sentences)

    def add_group(self, split: str, image_id: int, ann_ids: list[int], group: Group,
                  rng: np.random.Generator) -> int:
        """A ref whose phrase means the objects ``ann_ids`` (several, or none: ``[-1]``)."""
        self.ids["ref"] += 1
        self.ids["sent"] += 1
        text = group.say(self.style, rng, reworded=split == "reworded", count=len(ann_ids))
        categories = [next(a["category_id"] for a in self.annotations if a["id"] == ann_id)
                      for ann_id in ann_ids]
        self.refs.append({
            "ref_id": self.ids["ref"], "ann_id": ann_ids or [-1], "image_id": image_id,
            "split": split, "category_id": categories or [-1], "no_target": not ann_ids,
            "sentences": [{"tokens": text.split(), "raw": text, "sent": text,
                           "sent_id": self.ids["sent"], "kind": ""}],
            "sent_ids": [self.ids["sent"]], "file_name": f"synthetic_{image_id:06d}_g.jpg",
        })
        return 1

    def write(self, seed: int) -> None:
        info = {"description": "vipa synthetic RIS dataset", "version": SYNTHETIC_VERSION,
                "seed": seed, "image_size": self.image_size}
        if self.style is not DEFAULT:  # the default set's bytes stay as they were
            info["style"] = self.style.name
        instances = {
            "info": info, "images": self.images, "annotations": self.annotations,
            "categories": [{"id": i + 1, "name": s, "supercategory": "shape"}
                           for i, s in enumerate(self.style.shapes)],
        }
        (self.folder / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
        if self.grefcoco:  # every ref's ann_id and category_id a list, as gRefCOCO writes them
            refs = [{**ref, "ann_id": _listed(ref["ann_id"]),
                     "category_id": _listed(ref["category_id"])} for ref in self.refs]
            (self.folder / f"grefs({GREFCOCO_SPLIT_BY}).json").write_text(
                json.dumps(refs), encoding="utf-8")
        else:
            with (self.folder / f"refs({SPLIT_BY}).p").open("wb") as handle:
                pickle.dump(self.refs, handle, protocol=2)
        log.info("wrote %d images, %d refs, %d expressions to %s", len(self.images),
                 len(self.refs), self.ids["sent"], self.folder)


def _choose(scene: Scene, rng: np.random.Generator, room: int,
            turn: int) -> tuple[list[tuple[int, list[Expression]]], int]:
    """Up to two targets with lookalikes and 1-2 expressions each, at most ``room`` in all.

    ``turn`` says which kind comes next, so the three kinds stay balanced.
    """
    order = [int(i) for i in rng.permutation(len(scene.objects)) if has_lookalike(scene, int(i))]
    chosen: list[tuple[int, list[Expression]]] = []
    for index in order[:2]:
        expressions: list[Expression] = []
        for _ in range(int(rng.integers(1, 3))):
            if len(expressions) + sum(len(e) for _, e in chosen) >= room:
                break
            expression = describe(scene, index, KINDS[turn % 3], rng)
            if expression is None:
                break
            expressions.append(expression)
            turn += 1
        if expressions:
            chosen.append((index, expressions))
    return chosen, turn


Written = list[tuple[int, int, Obj, list[Expression]]]  # (image id, ann id, object, expressions)


class _Generalized:
    """The phrases that match several objects or none, drawn from their own random stream
    (so the one-object phrases, images and masks are those of the set without them)."""

    def __init__(self, share: float, seed: int) -> None:
        self.rate = share / (1.0 - share)  # per one-object phrase
        self.rng = np.random.default_rng([seed, 2])
        self.val: list[tuple[int, list[int], Group]] = []  # said again in the reworded split

    def add(self, writer: _CocoWriter, split: str, image_id: int, ann_ids: list[int],
            scene: Scene, singles: int) -> None:
        said: set[Group] = set()
        for _ in range(int(self.rng.binomial(singles, min(self.rate, 1.0)))):
            group = several(scene, self.rng) if self.rng.random() < 0.5 else None
            group = group or nothing(scene, self.rng, writer.style)
            if group in said:  # one phrase per meaning and image
                continue
            said.add(group)
            targets = [ann_ids[i] for i in members(scene, group)]
            writer.add_group(split, image_id, targets, group, self.rng)
            if split == "val":
                self.val.append((image_id, targets, group))


def _write_split(writer: _CocoWriter, split: str, wanted: int, rng: np.random.Generator,
                 on_sentences: Callable[[int], None],
                 generalized: _Generalized | None = None) -> Written:
    """Scenes and refs of ``split`` until ``wanted`` one-object expressions are written (and
    the generalized phrases beside them); the one-object refs written."""
    written: Written = []
    made, turn = 0, 0
    low, high = OBJECT_COUNTS[split]
    while made < wanted:
        style = writer.style
        scene = sample_scene(rng, int(rng.integers(low, high + 1)), writer.image_size,
                             style.shapes, tuple(style.colours))
        chosen, turn = _choose(scene, rng, wanted - made, turn)
        if not chosen:
            continue
        image_id = writer.add_image(split, render(scene, rng, style.colours))
        ann_ids = [writer.add_object(image_id, obj) for obj in scene.objects]
        count = 0
        for index, expressions in chosen:
            count += writer.add_ref(split, image_id, ann_ids[index], scene.objects[index],
                                    expressions)
            written.append((image_id, ann_ids[index], scene.objects[index], expressions))
        if generalized is not None:
            generalized.add(writer, split, image_id, ann_ids, scene, count)
        made += count
        on_sentences(count)
    return written


def generate_synthetic(out_dir: str | Path, seed: int = 0, n_train: int = 4000,
                       n_val: int = 500, n_test: int = 500, image_size: int = 128,
                       progress: Callable[[int, int], None] | None = None,
                       style: str = "default", generalized: float | None = None,
                       layout: str = "refer", absent_shape: float | None = None) -> Path:
    """Write the synthetic set under ``out_dir`` and return it (the ``root`` for RISDataset).

    ``n_*`` count expressions (samples); ``n_test`` is for each of testA and
    testB. ``progress(done, total)`` is called as expressions are made.
    ``style`` (:mod:`~vipa.data.synthetic.style`) picks shapes, palette and
    wording; the set is written to ``<out_dir>/<style's dataset name>``.
    ``generalized`` (default: the style's; 0.25 for ``gres``) is the share of phrases
    that match several objects or none, written beside the ``n_*`` one-object
    phrases (which stay those of the set without them); ``absent_shape`` (default: the
    style's, 0) the share of its no-match phrases that name a shape the scene lacks
    rather than a colour and a shape it has apart. ``layout="grefcoco"``
    writes gRefCOCO's files instead (``<out_dir>/grefcoco/grefs(unc).json`` with
    every ``ann_id`` a list, images in ``<out_dir>/images/train2014``; ``--data
    grefcoco`` reads it), the scenes, masks and phrases the same.
    """
    if image_size < 32:
        raise DataError(f"image_size must be at least 32, got {image_size}")
    if style not in STYLES:
        raise DataError(f"unknown synthetic style {style!r}; known: {', '.join(STYLES)}")
    root = Path(out_dir)
    chosen = STYLES[style]
    if generalized is not None:
        if not 0.0 <= generalized < 1.0:
            raise DataError(f"generalized must be in [0, 1), got {generalized}")
        chosen = replace(chosen, generalized=generalized)
    if absent_shape is not None:
        if not 0.0 <= absent_shape <= 1.0:
            raise DataError(f"absent_shape must be in [0, 1], got {absent_shape}")
        chosen = replace(chosen, absent_shape=absent_shape)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    folder = root / ("grefcoco" if layout == "grefcoco" else chosen.dataset)
    writer = _CocoWriter(folder, image_size, chosen, np.random.default_rng([seed, 1]),
                         grefcoco=layout == "grefcoco")
    rng = np.random.default_rng(seed)
    targets = {"train": n_train, "val": n_val, "testA": n_test, "testB": n_test}
    total, done = sum(targets.values()) + (n_val if chosen.reworded else 0), [0]

    def on_sentences(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], total)

    generalized = _Generalized(chosen.generalized, seed) if chosen.generalized else None
    written = {split: _write_split(writer, split, wanted, rng, on_sentences, generalized)
               for split, wanted in targets.items()}
    if chosen.reworded is not None:
        for image_id, ann_id, obj, expressions in written["val"]:
            on_sentences(writer.add_ref("reworded", image_id, ann_id, obj, expressions))
        for image_id, targets_of, group in generalized.val if generalized else ():
            writer.add_group("reworded", image_id, targets_of, group, generalized.rng)
    writer.write(seed)
    return root


def scene_of(instances: dict[str, Any], image_id: int) -> Scene:
    """Rebuild a scene from ``instances.json`` (the attributes the generator stored)."""
    image = next(im for im in instances["images"] if im["id"] == image_id)
    names = {c["id"]: c["name"] for c in instances["categories"]}
    objects = []
    for ann in instances["annotations"]:
        if ann["image_id"] != image_id:
            continue
        a = ann["attributes"]
        objects.append(Obj(shape=names[ann["category_id"]], colour=a["colour"], size=a["size"],
                           texture=a["texture"], x=a["center"][0], y=a["center"][1],
                           radius=a["radius"]))
    return Scene(tuple(objects), int(image["width"]))
