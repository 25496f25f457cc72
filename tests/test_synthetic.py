"""The synthetic RIS set: loads through RISDataset, expressions are unique, text is needed."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import vipa.data.synthetic as synthetic
from vipa.data.dataset import RISDataset
from vipa.data.synthetic import (
    COLOURS,
    KINDS,
    SHAPES,
    SIZES,
    TEXTURES,
    Obj,
    Scene,
    ensure_synthetic,
    generate_synthetic,
    has_lookalike,
    parse_expression,
    picks_out,
    scene_of,
)
from vipa.errors import DataError

SMALL = {"n_train": 90, "n_val": 30, "n_test": 24, "image_size": 64}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def instances(root: Path) -> dict:
    return json.loads((root / "synthetic" / "instances.json").read_text())


@pytest.fixture(scope="module")
def refs(root: Path) -> list[dict]:
    with (root / "synthetic" / "refs(vipa).p").open("rb") as handle:
        return pickle.load(handle)


def _objects(instances: dict, image_id: int) -> list[dict]:
    """The annotations of one image as plain dicts (the test's own view of the scene)."""
    names = {c["id"]: c["name"] for c in instances["categories"]}
    return [{"id": a["id"], "shape": names[a["category_id"]], **a["attributes"]}
            for a in instances["annotations"] if a["image_id"] == image_id]


def _naive_referents(objects: list[dict], text: str, side: float) -> list[int]:
    """An independent reading of the grammar: which annotation ids could the text mean?"""
    margin = 0.08 * side
    words = text.split()
    assert words[0] == "the"
    shape_positions = [i for i, w in enumerate(words) if w in SHAPES]

    def fits(obj: dict, description: list[str]) -> bool:
        for word in description:
            if word in SHAPES and obj["shape"] != word:
                return False
            for key, vocab in (("colour", COLOURS), ("size", SIZES), ("texture", TEXTURES)):
                if word in vocab and obj[key] != word:
                    return False
        return True

    first = words[1:shape_positions[0] + 1]
    position = first[0] if first[0] in ("leftmost", "rightmost") else None
    candidates = [o for o in objects if fits(o, first)]
    tail = words[shape_positions[0] + 1:]
    x = {o["id"]: o["center"][0] for o in objects}
    y = {o["id"]: o["center"][1] for o in objects}
    key = {"leftmost": lambda o: x[o["id"]], "rightmost": lambda o: -x[o["id"]],
           "top": lambda o: y[o["id"]], "bottom": lambda o: -y[o["id"]]}
    if tail[:2] == ["at", "the"]:
        position = tail[2]
    if position is not None:
        best = min(key[position](o) for o in candidates)
        return [o["id"] for o in candidates if key[position](o) <= best + margin]
    if not tail:
        return [o["id"] for o in candidates]
    relation = " ".join(tail[:2]) if tail[1] == "of" else tail[0]
    anchors = [o for o in objects if fits(o, tail[tail.index("the") + 1:])]
    assert len(anchors) == 1, text  # the anchor itself must be unique
    (anchor,) = anchors
    side_of = {"left of": lambda o: x[anchor["id"]] - x[o["id"]],
               "right of": lambda o: x[o["id"]] - x[anchor["id"]],
               "above": lambda o: y[anchor["id"]] - y[o["id"]],
               "below": lambda o: y[o["id"]] - y[anchor["id"]]}[relation]
    found = [o for o in candidates if o is not anchor and side_of(o) > -margin]
    assert all(side_of(o) >= margin for o in found), text
    return [o["id"] for o in found]


def test_loads_through_risdataset(root: Path) -> None:
    for split, wanted in [("train", 90), ("val", 30), ("testA", 24), ("testB", 24),
                          ("reworded", 30)]:
        ds = RISDataset(root, "synthetic", split, image_size=32, keep_original=True)
        assert len(ds) == wanted
        item = ds[0]
        assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
        assert item["orig_mask"].shape == (64, 64)
        area = int(item["orig_mask"].sum())
        assert 0.01 * 64 * 64 < area < 0.3 * 64 * 64


def test_every_expression_picks_out_exactly_its_object(root: Path, instances: dict,
                                                       refs: list[dict]) -> None:
    checked = 0
    for ref in refs:
        scene = scene_of(instances, ref["image_id"])
        objects = _objects(instances, ref["image_id"])
        ann_ids = [o["id"] for o in objects]
        for sentence in ref["sentences"]:
            expression = synthetic.DEFAULT.read(sentence["sent"],
                                                reworded=ref["split"] == "reworded")
            assert expression is not None, sentence["sent"]
            assert expression.kind == sentence["kind"]
            assert picks_out(scene, expression) == ann_ids.index(ref["ann_id"])
            assert _naive_referents(objects, expression.text(), 64) == [ref["ann_id"]]
            checked += 1
    assert checked == 90 + 30 + 2 * 24 + 30


def test_the_three_kinds_are_balanced(refs: list[dict]) -> None:
    for split in ("train", "val", "testA", "testB", "reworded"):
        kinds = Counter(s["kind"] for r in refs if r["split"] == split for s in r["sentences"])
        assert set(kinds) == set(KINDS)
        assert max(kinds.values()) - min(kinds.values()) <= 1, (split, kinds)


def test_text_is_necessary(instances: dict, refs: list[dict]) -> None:
    shared = 0
    for ref in refs:
        objects = _objects(instances, ref["image_id"])
        target = next(o for o in objects if o["id"] == ref["ann_id"])
        others = [o for o in objects if o is not target]
        shared += any(o["shape"] == target["shape"] or o["colour"] == target["colour"]
                      for o in others)
        assert has_lookalike(scene_of(instances, ref["image_id"]),
                             [o["id"] for o in objects].index(ref["ann_id"]))
    assert shared == len(refs)
    # Images usually hold two referred objects, so one image maps to different masks.
    per_image = Counter(r["image_id"] for r in refs)
    assert sum(n >= 2 for n in per_image.values()) >= 0.4 * len(per_image)


def test_testa_is_sparse_and_testb_crowded(instances: dict) -> None:
    counts = Counter(a["image_id"] for a in instances["annotations"])
    split_of = {im["id"]: im["split"] for im in instances["images"]}
    for image_id, n in counts.items():
        low, high = synthetic.OBJECT_COUNTS[split_of[image_id]]
        assert low <= n <= high
    assert {n for i, n in counts.items() if split_of[i] == "testB"} == {4}
    assert max(n for i, n in counts.items() if split_of[i] == "testA") <= 3


def test_masks_match_the_drawn_objects(root: Path) -> None:
    ds = RISDataset(root, "synthetic", "val", image_size=64, keep_original=True)
    for i in range(5):
        item = ds[i]
        inside = item["orig_mask"].bool()
        pixels = item["image"]
        # Objects are saturated colours on a light grey background.
        spread_inside = (pixels.max(0).values - pixels.min(0).values)[inside].mean()
        spread_outside = (pixels.max(0).values - pixels.min(0).values)[~inside].mean()
        assert spread_inside > 0.35 > spread_outside


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "synthetic").rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path: Path, root: Path) -> None:
    small = {"n_train": 12, "n_val": 6, "n_test": 6, "image_size": 48}
    a = _files(generate_synthetic(tmp_path / "a", seed=3, **small))
    b = _files(generate_synthetic(tmp_path / "b", seed=3, **small))
    c = _files(generate_synthetic(tmp_path / "c", seed=4, **small))
    assert a == b
    assert a["synthetic/refs(vipa).p"] != c["synthetic/refs(vipa).p"]
    assert a["synthetic/images/synthetic_000001.jpg"] != \
        c["synthetic/images/synthetic_000001.jpg"]


def test_refs_pickle_is_protocol_2_plain_containers(root: Path) -> None:
    data = (root / "synthetic" / "refs(vipa).p").read_bytes()
    assert data[:2] == b"\x80\x02"
    from vipa.data.safe_pickle import loads_plain

    assert loads_plain(data) == pickle.loads(data)


def _scene(*objects: tuple[str, str, float, float]) -> Scene:
    return Scene(tuple(Obj(shape=s, colour=c, size="small", texture="plain", x=x, y=y,
                           radius=6.0) for s, c, x, y in objects), 100)


def test_checker_on_hand_made_scenes() -> None:
    scene = _scene(("circle", "red", 20, 50), ("circle", "blue", 80, 50),
                   ("star", "blue", 50, 20), ("circle", "red", 30, 85))
    assert picks_out(scene, parse_expression("the blue circle")) == 1
    assert picks_out(scene, parse_expression("the red circle")) is None  # two of them
    assert picks_out(scene, parse_expression("the star")) == 2
    assert picks_out(scene, parse_expression("the leftmost circle")) == 0
    assert picks_out(scene, parse_expression("the circle at the bottom")) == 3
    assert picks_out(scene, parse_expression("the circle at the top")) is None  # a tie
    assert picks_out(scene, parse_expression("the circle right of the star")) == 1
    assert picks_out(scene, parse_expression("the circle below the star")) is None  # 3 below
    assert picks_out(scene, parse_expression("the circle left of the blue circle")) is None
    # the anchor "the circle" is not unique, so the relation cannot be resolved
    assert picks_out(scene, parse_expression("the star above the circle")) is None
    # a near-tie with the anchor is ambiguous, not "left of"
    near = _scene(("circle", "red", 46, 20), ("star", "blue", 50, 60), ("circle", "red", 90, 20))
    assert picks_out(near, parse_expression("the circle left of the star")) is None
    assert picks_out(near, parse_expression("the circle right of the star")) is None
    clear = _scene(("circle", "red", 30, 20), ("star", "blue", 50, 60), ("circle", "red", 90, 20))
    assert picks_out(clear, parse_expression("the circle left of the star")) == 0
    assert picks_out(clear, parse_expression("the circle right of the star")) == 2
    with pytest.raises(DataError):
        parse_expression("the dog on the sofa")


def test_ensure_synthetic_generates_once_into_the_cache(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = synthetic.generate_synthetic

    def small(out_dir: Path, seed: int = 0, **_: object) -> Path:
        calls.append(seed)
        return real(out_dir, seed=seed, n_train=6, n_val=3, n_test=3, image_size=48)

    monkeypatch.setattr(synthetic.cache, "generate_synthetic", small)
    monkeypatch.setenv("VIPA_CACHE", str(tmp_path / "cache"))
    first = ensure_synthetic(seed=2)
    assert first.parent == tmp_path / "cache" and "seed2" in first.name
    assert ensure_synthetic(seed=2) == first and calls == [2]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp left
    assert len(RISDataset(first, "synthetic", "val")) == 3
    other = ensure_synthetic(tmp_path / "elsewhere", seed=2)
    assert other.parent == tmp_path / "elsewhere" and calls == [2, 2]
    assert np.array_equal(np.frombuffer((first / "synthetic" / "refs(vipa).p").read_bytes(),
                                        np.uint8),
                          np.frombuffer((other / "synthetic" / "refs(vipa).p").read_bytes(),
                                        np.uint8))


def _all_expressions(scene: Scene) -> list[synthetic.Expression]:
    """Every expression the generator could write about the scene."""
    from itertools import product

    from vipa.data.synthetic import POSITIONS, RELATIONS, Expression, Phrase

    phrases = {Phrase(shape=o.shape, colour=colour, size=size)
               for o in scene.objects
               for colour, size in product((None, o.colour), (None, o.size))}
    found = []
    for phrase in phrases:
        found.append(Expression("attribute", phrase))
        found += [Expression("position", phrase, position=p) for p in POSITIONS]
        found += [Expression("relation", phrase, relation=r, anchor=a)
                  for r, a in product(RELATIONS, phrases)]
    return found


def test_heldout_style_shares_no_shape_colour_or_wording_and_stays_unambiguous(tmp_path):
    """The held-out set: its own vocabulary and templates; each sentence still means one object."""
    root = generate_synthetic(tmp_path, seed=0, style="heldout", **SMALL)
    folder = root / "synthetic-heldout"
    instances = json.loads((folder / "instances.json").read_text())
    refs = pickle.loads((folder / "refs(vipa).p").read_bytes())
    assert instances["info"]["style"] == "heldout"
    assert {c["name"] for c in instances["categories"]}.isdisjoint(SHAPES)
    words = {w for ref in refs for s in ref["sentences"] for w in s["sent"].split()}
    default_only = {*SHAPES, *COLOURS, *SIZES, "leftmost", "rightmost", "at", "top", "bottom",
                    "left", "right", "above", "below"} - {"left", "right"}
    assert words.isdisjoint(default_only)
    checked = 0
    for ref in refs:
        scene = scene_of(instances, ref["image_id"])
        ann_ids = [a["id"] for a in instances["annotations"] if a["image_id"] == ref["image_id"]]
        for sentence in ref["sentences"]:
            expression = synthetic.HELDOUT.read(sentence["sent"])
            assert expression is not None, sentence["sent"]
            assert expression.kind == sentence["kind"]
            assert picks_out(scene, expression) == ann_ids.index(ref["ann_id"])
            checked += 1
    assert checked == 90 + 30 + 2 * 24
    dataset = RISDataset(root, "synthetic-heldout", "val", image_size=32)
    assert len(dataset) == 30 and dataset[0]["mask"].sum() > 0


@pytest.mark.parametrize("style", [synthetic.DEFAULT, synthetic.STYLES["wide"]],
                         ids=["default", "wide"])
def test_both_wordings_read_back_and_no_grammar_sentence_reads_like_a_reworded_one(
        style: synthetic.Style) -> None:
    """Every way of saying an expression reads back to it; reworded phrasings are all new,
    to the wider training wording too."""
    scene = _scene(("circle", "red", 10, 30), ("circle", "blue", 40, 30), ("star", "red", 25, 5),
                   ("square", "purple", 50, 50))
    rng = np.random.default_rng(0)
    grammar: set[str] = set()
    for expression in _all_expressions(scene):
        assert parse_expression(expression.text()) == expression  # the canonical sentence
        for _ in range(12):
            text = style.text(expression, rng)
            assert style.read(text) == expression, text
            grammar.add(text)
            reworded = style.text(expression, rng, reworded=True)
            assert style.read(reworded, reworded=True) == expression, reworded
            assert style.read(reworded) is None, reworded  # not a grammar sentence
            assert parse_expression(reworded) == expression
    assert len(grammar) > 3 * len(_all_expressions(scene))  # many ways to say each
    with pytest.raises(DataError, match="cannot parse"):
        parse_expression("the thing over there")
    assert all(t.startswith("the ") for wording in (style.wording, synthetic.REWORDED)
               for _, _, t in wording.templates())
    reworded_templates = {t for _, _, t in synthetic.REWORDED.templates()}
    assert reworded_templates.isdisjoint(t for _, _, t in style.wording.templates())
