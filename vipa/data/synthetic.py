"""The built-in synthetic RIS dataset: coloured shapes and referring expressions.

Written in the RefCOCO format (``refs(vipa).p`` + ``instances.json`` + JPEG
images) and read back by the same loader, so the whole pipeline runs
offline. Every expression is checked by :func:`picks_out`, a function over
the scene, to refer to exactly one object, and every target has a
distractor of the same shape or colour, so an image-only model cannot solve
the set.

Splits: ``train`` and ``val`` scenes hold 2-4 objects; ``testA`` holds
sparse scenes (2-3 objects), ``testB`` crowded ones (4 objects), the way
RefCOCO splits its test set into two kinds of images.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vipa.errors import DataError

log = logging.getLogger(__name__)

# Bump when the generator's output changes, so caches are regenerated.
SYNTHETIC_VERSION = 2
SPLIT_BY = "vipa"

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 185),
}
SIZES: tuple[str, ...] = ("small", "big")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
KINDS: tuple[str, ...] = ("attribute", "position", "relation")
POSITIONS: tuple[str, ...] = ("leftmost", "rightmost", "top", "bottom")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
# Object counts per split: testA sparse, testB crowded.
OBJECT_COUNTS: dict[str, tuple[int, int]] = {
    "train": (2, 4), "val": (2, 4), "testA": (2, 3), "testB": (4, 4)}
# Radius as a share of the image side: small ~24 %, big ~36 % of the side across.
RADIUS = {"small": 0.12, "big": 0.18}
# Position words need this clear a gap (share of the side) to count as true.
MARGIN = 0.08


@dataclass(frozen=True)
class Obj:
    """One shape in a scene; (x, y) is its centre in pixels, y grows downwards."""

    shape: str
    colour: str
    size: str
    texture: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    image_size: int

    @property
    def margin(self) -> float:
        return MARGIN * self.image_size


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: the attributes it names (None = not said) and its shape noun."""

    shape: str
    colour: str | None = None
    size: str | None = None
    texture: str | None = None

    def matches(self, obj: Obj) -> bool:
        return (obj.shape == self.shape
                and (self.colour is None or obj.colour == self.colour)
                and (self.size is None or obj.size == self.size)
                and (self.texture is None or obj.texture == self.texture))

    def text(self) -> str:
        words = [w for w in (self.size, self.colour, self.texture) if w is not None]
        return " ".join([*words, self.shape])


@dataclass(frozen=True)
class Expression:
    """A parsed referring expression: ``kind`` with its phrase and position or relation."""

    kind: str
    phrase: Phrase
    position: str | None = None
    relation: str | None = None
    anchor: Phrase | None = None

    def text(self) -> str:
        if self.kind == "attribute":
            return f"the {self.phrase.text()}"
        if self.kind == "position":
            if self.position in ("leftmost", "rightmost"):
                return f"the {self.position} {self.phrase.text()}"
            return f"the {self.phrase.text()} at the {self.position}"
        assert self.anchor is not None
        return f"the {self.phrase.text()} {self.relation} the {self.anchor.text()}"


# -- the checker --------------------------------------------------------------------------

def parse_expression(text: str) -> Expression:
    """Parse an expression of the generator's grammar; DataError for anything else."""
    words = text.strip().lower().split()

    def phrase(tokens: list[str]) -> tuple[Phrase, list[str]]:
        found: dict[str, str] = {}
        for i, word in enumerate(tokens):
            if word in SHAPES:
                return Phrase(shape=word, **found), tokens[i + 1:]
            for key, vocab in (("colour", COLOURS), ("size", SIZES), ("texture", TEXTURES)):
                if word in vocab and key not in found:
                    found[key] = word
                    break
            else:
                break
        raise DataError(f"cannot parse expression {text!r}")

    if not words or words[0] != "the":
        raise DataError(f"cannot parse expression {text!r}")
    rest = words[1:]
    position = None
    if rest and rest[0] in ("leftmost", "rightmost"):
        position, rest = rest[0], rest[1:]
    target, rest = phrase(rest)
    if position is not None:
        if rest:
            raise DataError(f"cannot parse expression {text!r}")
        return Expression("position", target, position=position)
    if not rest:
        return Expression("attribute", target)
    if rest[:2] == ["at", "the"] and len(rest) == 3 and rest[2] in ("top", "bottom"):
        return Expression("position", target, position=rest[2])
    for relation in RELATIONS:
        head = relation.split() + ["the"]
        if rest[:len(head)] == head:
            anchor, tail = phrase(rest[len(head):])
            if tail:
                break
            return Expression("relation", target, relation=relation, anchor=anchor)
    raise DataError(f"cannot parse expression {text!r}")


def _coordinate(obj: Obj, direction: str) -> float:
    """A coordinate that is smallest for the object furthest in ``direction``."""
    return {"leftmost": obj.x, "rightmost": -obj.x, "top": obj.y, "bottom": -obj.y,
            "left of": obj.x, "right of": -obj.x, "above": obj.y, "below": -obj.y}[direction]


def resolve(scene: Scene, expression: Expression) -> list[int]:
    """Indices of every object a listener could take the expression to mean.

    Near-ties count: with position words, any candidate within the margin of
    the extreme one; with relations, any candidate not clearly on the other
    side of the anchor. An anchor that is not unique makes everything possible.
    """
    objects = scene.objects
    candidates = [i for i, o in enumerate(objects) if expression.phrase.matches(o)]
    if expression.kind == "attribute":
        return candidates
    if expression.kind == "position":
        if not candidates:
            return []
        assert expression.position is not None
        values = [_coordinate(objects[i], expression.position) for i in candidates]
        best = min(values)
        return [i for i, v in zip(candidates, values, strict=True) if v <= best + scene.margin]
    assert expression.anchor is not None and expression.relation is not None
    anchors = resolve(scene, Expression("attribute", expression.anchor))
    if len(anchors) != 1:
        return [i for i in candidates if i not in anchors] if anchors else []
    anchor = objects[anchors[0]]
    limit = _coordinate(anchor, expression.relation) + scene.margin
    return [i for i in candidates if i != anchors[0]
            and _coordinate(objects[i], expression.relation) < limit]


def picks_out(scene: Scene, expression: Expression) -> int | None:
    """The one object the expression clearly means, or None when it is ambiguous or empty."""
    found = resolve(scene, expression)
    if len(found) != 1:
        return None
    if expression.kind == "relation":
        assert expression.anchor is not None and expression.relation is not None
        anchors = resolve(scene, Expression("attribute", expression.anchor))
        if len(anchors) != 1:
            return None
        target, anchor = scene.objects[found[0]], scene.objects[anchors[0]]
        gap = _coordinate(anchor, expression.relation) - _coordinate(target, expression.relation)
        if gap < scene.margin:
            return None
    return found[0]


def has_lookalike(scene: Scene, index: int) -> bool:
    """Whether another object shares the target's shape or colour (the text is needed)."""
    target = scene.objects[index]
    return any(o.shape == target.shape or o.colour == target.colour
               for i, o in enumerate(scene.objects) if i != index)


# -- generation ---------------------------------------------------------------------------

# Textures are drawn (the model must see past them) but never named: telling stripes
# from dots takes far more training than colour, shape and size.
_ATTRIBUTE_SETS: tuple[tuple[str, ...], ...] = (
    (), ("colour",), ("size",), ("size", "colour"))


def _phrase_for(obj: Obj, keys: Sequence[str]) -> Phrase:
    return Phrase(shape=obj.shape, **{k: getattr(obj, k) for k in keys})


def _shortest_unique_phrase(scene: Scene, index: int, rng: np.random.Generator) -> Phrase | None:
    obj = scene.objects[index]
    for length in range(4):
        options = [keys for keys in _ATTRIBUTE_SETS if len(keys) == length]
        for j in rng.permutation(len(options)):
            phrase = _phrase_for(obj, options[j])
            if picks_out(scene, Expression("attribute", phrase)) == index:
                return phrase
    return None


def _shared_phrases(scene: Scene, index: int, rng: np.random.Generator) -> list[Phrase]:
    """Phrases that fit the target and at least one other object (so more words are needed)."""
    obj = scene.objects[index]
    phrases = [_phrase_for(obj, keys) for keys in ((), ("colour",), ("size",))]
    phrases = [p for p in phrases if sum(p.matches(o) for o in scene.objects) >= 2]
    return [phrases[j] for j in rng.permutation(len(phrases))]


def describe(scene: Scene, index: int, kind: str, rng: np.random.Generator) -> Expression | None:
    """An expression of ``kind`` that picks out object ``index`` alone, or None if there is none."""
    if kind == "attribute":
        phrase = _shortest_unique_phrase(scene, index, rng)
        return None if phrase is None else Expression("attribute", phrase)
    if kind == "position":
        for phrase in _shared_phrases(scene, index, rng):
            for j in rng.permutation(len(POSITIONS)):
                expression = Expression("position", phrase, position=POSITIONS[j])
                if picks_out(scene, expression) == index:
                    return expression
        return None
    others = [i for i in range(len(scene.objects)) if i != index]
    for phrase in _shared_phrases(scene, index, rng):
        for k in rng.permutation(len(others)):
            anchor = _shortest_unique_phrase(scene, others[k], rng)
            if anchor is None:
                continue
            for j in rng.permutation(len(RELATIONS)):
                expression = Expression("relation", phrase, relation=RELATIONS[j], anchor=anchor)
                if picks_out(scene, expression) == index:
                    return expression
    return None


def sample_scene(rng: np.random.Generator, n_objects: int, image_size: int) -> Scene:
    """Non-overlapping shapes drawn from a few shapes and colours, so lookalikes are common."""
    shapes = rng.choice(len(SHAPES), size=int(rng.integers(2, 4)), replace=False)
    colours = rng.choice(len(COLOURS), size=int(rng.integers(2, 4)), replace=False)
    colour_names = list(COLOURS)
    gap = 0.02 * image_size
    for _ in range(100):
        objects: list[Obj] = []
        for _ in range(n_objects):
            size = SIZES[int(rng.integers(2))]
            radius = RADIUS[size] * image_size
            for _ in range(60):
                x, y = rng.uniform(radius + gap, image_size - radius - gap, size=2)
                if all((x - o.x) ** 2 + (y - o.y) ** 2 >= (radius + o.radius + gap) ** 2
                       for o in objects):
                    break
            else:
                break
            texture = TEXTURES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
            objects.append(Obj(
                shape=SHAPES[int(rng.choice(shapes))],
                colour=colour_names[int(rng.choice(colours))],
                size=size, texture=texture, x=round(float(x), 2), y=round(float(y), 2),
                radius=round(radius, 2)))
        if len(objects) == n_objects:
            return Scene(tuple(objects), image_size)
    raise DataError(f"cannot place {n_objects} objects in a {image_size}px image")


def polygon(obj: Obj) -> list[float]:
    """The outline as a flat COCO polygon [x0, y0, x1, y1, ...] (stars and circles too)."""
    r = obj.radius
    if obj.shape == "circle":
        angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        radii = np.full_like(angles, r)
    elif obj.shape == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(angles, r * 0.85 * np.sqrt(2))
    elif obj.shape == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full_like(angles, r * 1.1)
        # Shift down so the triangle's box is centred on (x, y).
        obj = replace(obj, y=obj.y + r * 1.1 * 0.25)
    else:  # star
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.05, r * 0.45)
    xs = obj.x + radii * np.cos(angles)
    ys = obj.y + radii * np.sin(angles)
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw the scene: uint8 (S, S, 3), flat light background, textured shapes."""
    from PIL import Image, ImageDraw

    size = scene.image_size
    background = int(rng.integers(220, 246))
    canvas = np.full((size, size, 3), background, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, round(size / 21))
    stripes = ((xx + yy) % period) < period / 2
    dots = ((xx % period) - period / 2) ** 2 + ((yy % period) - period / 2) ** 2 \
        <= (period / 4) ** 2
    for obj in scene.objects:
        layer = Image.new("L", (size, size), 0)
        ImageDraw.Draw(layer).polygon(polygon(obj), fill=255)
        inside = np.asarray(layer) > 127
        colour = np.array(COLOURS[obj.colour], dtype=np.float32)
        shade = (colour * 0.55).astype(np.uint8)
        canvas[inside] = colour.astype(np.uint8)
        if obj.texture == "striped":
            canvas[inside & stripes] = shade
        elif obj.texture == "dotted":
            canvas[inside & dots] = shade
    return canvas


def _split_sizes(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    return {"train": n_train, "val": n_val, "testA": n_test, "testB": n_test}


def generate_synthetic(out_dir: str | Path, seed: int = 0, n_train: int = 4000,
                       n_val: int = 500, n_test: int = 500, image_size: int = 128,
                       progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the synthetic set under ``out_dir`` and return it (the ``root`` for RISDataset).

    ``n_*`` count expressions (samples); ``n_test`` is for each of testA and
    testB. ``progress(done, total)`` is called as expressions are made.
    Same seed and sizes give the same bytes.
    """
    from PIL import Image
    from pycocotools import mask as mask_utils

    if image_size < 32:
        raise DataError(f"image_size must be at least 32, got {image_size}")
    root = Path(out_dir)
    folder = root / "synthetic"
    image_folder = folder / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    targets = _split_sizes(n_train, n_val, n_test)
    total = sum(targets.values())
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    done = 0
    ids = {"image": 0, "ann": 0, "ref": 0, "sent": 0}
    for split, wanted in targets.items():
        made = 0
        turn = 0  # which kind comes next, so the three kinds stay balanced
        low, high = OBJECT_COUNTS[split]
        while made < wanted:
            scene = sample_scene(rng, int(rng.integers(low, high + 1)), image_size)
            order = [int(i) for i in rng.permutation(len(scene.objects))
                     if has_lookalike(scene, int(i))]
            chosen: list[tuple[int, list[Expression]]] = []
            for index in order[:2]:
                expressions: list[Expression] = []
                for _ in range(int(rng.integers(1, 3))):
                    if made + len(expressions) + sum(len(e) for _, e in chosen) >= wanted:
                        break
                    expression = describe(scene, index, KINDS[turn % 3], rng)
                    if expression is None:
                        break
                    expressions.append(expression)
                    turn += 1
                if expressions:
                    chosen.append((index, expressions))
            if not chosen:
                continue
            ids["image"] += 1
            image_id = ids["image"]
            file_name = f"synthetic_{image_id:06d}.jpg"
            buffer = io.BytesIO()
            Image.fromarray(render(scene, rng)).save(buffer, format="JPEG", quality=95)
            (image_folder / file_name).write_bytes(buffer.getvalue())
            images.append({"id": image_id, "file_name": file_name, "height": image_size,
                           "width": image_size, "split": split})
            ann_ids = []
            for obj in scene.objects:
                ids["ann"] += 1
                poly = polygon(obj)
                rle = mask_utils.frPyObjects([poly], image_size, image_size)[0]
                annotations.append({
                    "id": ids["ann"], "image_id": image_id,
                    "category_id": SHAPES.index(obj.shape) + 1, "segmentation": [poly],
                    "area": float(mask_utils.area(rle)),
                    "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                    "attributes": {"colour": obj.colour, "size": obj.size,
                                   "texture": obj.texture, "center": [obj.x, obj.y],
                                   "radius": obj.radius},
                })
                ann_ids.append(ids["ann"])
            for index, expressions in chosen:
                ids["ref"] += 1
                sentences = []
                for expression in expressions:
                    ids["sent"] += 1
                    text = expression.text()
                    sentences.append({"tokens": text.split(), "raw": text, "sent": text,
                                      "sent_id": ids["sent"], "kind": expression.kind})
                refs.append({
                    "ref_id": ids["ref"], "ann_id": ann_ids[index], "image_id": image_id,
                    "split": split, "category_id": SHAPES.index(scene.objects[index].shape) + 1,
                    "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences],
                    # The ref's own name differs from the image's, as in RefCOCO.
                    "file_name": f"synthetic_{image_id:06d}_{ann_ids[index]}.jpg",
                })
                made += len(sentences)
                done += len(sentences)
            if progress is not None:
                progress(done, total)
    instances = {
        "info": {"description": "vipa synthetic RIS dataset", "version": SYNTHETIC_VERSION,
                 "seed": seed, "image_size": image_size},
        "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": s, "supercategory": "shape"}
                       for i, s in enumerate(SHAPES)],
    }
    (folder / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    with (folder / f"refs({SPLIT_BY}).p").open("wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    log.info("wrote %d images, %d refs, %d expressions to %s",
             len(images), len(refs), ids["sent"], folder)
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


def default_cache_dir() -> Path:
    """``$VIPA_CACHE`` or ``~/.cache/vipa``."""
    return Path(os.environ.get("VIPA_CACHE") or Path.home() / ".cache" / "vipa").expanduser()


def ensure_synthetic(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Generate the default synthetic set once into the cache and return its root.

    Written to a temporary folder and renamed into place, so a crash or a
    second process never leaves (or reads) a half-written set.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / f"synthetic-v{SYNTHETIC_VERSION}-seed{seed}"
    if (final / "synthetic" / f"refs({SPLIT_BY}).p").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=cache))
    try:
        generate_synthetic(temp, seed=seed)
        try:
            os.rename(temp, final)
        except OSError:
            if not (final / "synthetic" / f"refs({SPLIT_BY}).p").is_file():
                raise
            log.info("another process wrote %s first; using it", final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return final
