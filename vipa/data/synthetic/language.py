"""The expressions of the synthetic set: their meaning, what they refer to, and the describer.

Every expression is checked by :func:`picks_out`, a function over the scene,
to refer to exactly one object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vipa.data.synthetic.scene import Obj, Scene

KINDS: tuple[str, ...] = ("attribute", "position", "relation")
POSITIONS: tuple[str, ...] = ("leftmost", "rightmost", "top", "bottom")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


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


# Textures are drawn (the model must see past them) but never named: telling stripes
# from dots takes far more training than colour, shape and size.
_ATTRIBUTE_SETS: tuple[tuple[str, ...], ...] = (
    (), ("colour",), ("size",), ("size", "colour"))


def _phrase_for(obj: Obj, keys: Sequence[str]) -> Phrase:
    return Phrase(shape=obj.shape, **{k: getattr(obj, k) for k in keys})


def shortest_unique_phrase(scene: Scene, index: int, rng: np.random.Generator) -> Phrase | None:
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
        phrase = shortest_unique_phrase(scene, index, rng)
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
            anchor = shortest_unique_phrase(scene, others[k], rng)
            if anchor is None:
                continue
            for j in rng.permutation(len(RELATIONS)):
                expression = Expression("relation", phrase, relation=RELATIONS[j], anchor=anchor)
                if picks_out(scene, expression) == index:
                    return expression
    return None
