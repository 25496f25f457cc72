"""Phrases that refer to several objects or to none: the generalized half of the synthetic set.

``several``: every object of a shape, of a colour, or of both ("all the circles",
"both red shapes", "every small square"), or two objects each named on its own
("the red circle and the blue square"). ``none``: a phrase worded like the
set's one-object phrases that fits no object, the hard way first: a colour and
a shape that are both in the scene but never together ("the green star" beside
a green circle and a red star), else a shape the scene lacks. Each is said in
the style's words and templates (:class:`~vipa.data.synthetic.wording.Wording`'s
``several``, ``two``, ``pair``) and, for the ``reworded`` split, in its reworded ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vipa.data.synthetic.language import Expression, Phrase, resolve, shortest_unique_phrase
from vipa.data.synthetic.scene import Scene
from vipa.data.synthetic.style import Style
from vipa.data.synthetic.wording import Wording, pick


@dataclass(frozen=True)
class Group:
    """What a generalized phrase means: a colour and/or shape group, a pair, or nothing."""

    kind: str  # "group", "pair" or "none"
    colour: str | None = None
    shape: str | None = None  # None in a colour group: "shapes"
    size: str | None = None
    pair: tuple[Phrase, Phrase] | None = None
    expression: Expression | None = None  # "none": a one-object phrase that fits nothing

    def say(self, style: Style, rng: np.random.Generator, reworded: bool = False,
            count: int = 0) -> str:
        """One sentence for the group in the style's (or its reworded) wording."""
        wording = style.reworded if reworded and style.reworded else style.wording
        if self.kind == "none":
            assert self.expression is not None
            return wording.say(self.expression, rng)
        if self.kind == "pair":
            assert self.pair is not None
            a, b = (wording.phrase(p, rng) for p in self.pair)
            return pick(wording.pair, rng).format(a=a, b=b)
        templates = wording.two if count == 2 else wording.several
        thing = self._noun(wording, rng)
        return pick(templates, rng).format(thing=thing, things=plural(thing))

    def _noun(self, wording: Wording, rng: np.random.Generator) -> str:
        if self.shape is not None:
            return wording.phrase(Phrase(self.shape, self.colour, self.size), rng)
        colour = pick(wording.colour_words.get(self.colour, (self.colour,)), rng)
        return f"{colour} shape"


def plural(noun_phrase: str) -> str:
    """The noun phrase with its last word in the plural ("red box" -> "red boxes")."""
    *words, noun = noun_phrase.split()
    return " ".join([*words, noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")])


def members(scene: Scene, group: Group) -> list[int]:
    """Indices of the objects ``group`` refers to (none for a ``none`` group)."""
    if group.kind == "none":
        assert group.expression is not None
        return resolve(scene, group.expression)
    if group.kind == "pair":
        assert group.pair is not None
        return sorted(i for p in group.pair for i in resolve(scene, Expression("attribute", p)))
    return [i for i, o in enumerate(scene.objects)
            if (group.colour is None or o.colour == group.colour)
            and (group.shape is None or o.shape == group.shape)
            and (group.size is None or o.size == group.size)]


def several(scene: Scene, rng: np.random.Generator) -> Group | None:
    """A group of two or more objects of the scene, or None when it has none."""
    objects = scene.objects
    options = [Group("group", shape=o.shape) for o in objects]
    options += [Group("group", colour=o.colour) for o in objects]
    options += [Group("group", colour=o.colour, shape=o.shape) for o in objects]
    options += [Group("group", size=o.size, shape=o.shape) for o in objects]
    options = [g for g in dict.fromkeys(options) if len(members(scene, g)) >= 2]
    if rng.random() < 0.3 and len(objects) >= 2:  # a pair, each named on its own
        first, second = (int(i) for i in rng.permutation(len(objects))[:2])
        phrases = (shortest_unique_phrase(scene, first, rng),
                   shortest_unique_phrase(scene, second, rng))
        if phrases[0] is not None and phrases[1] is not None:
            return Group("pair", pair=(phrases[0], phrases[1]))
    return options[int(rng.integers(len(options)))] if options else None


def nothing(scene: Scene, rng: np.random.Generator, style: Style) -> Group:
    """A one-object phrase that fits no object: a colour and a shape of the scene never seen
    together where the scene has such a pair, else a shape or a colour it lacks; for
    ``style.absent_shape`` of them (where the scene lacks a shape) a shape it lacks."""
    colours = sorted({o.colour for o in scene.objects})
    shapes = sorted({o.shape for o in scene.objects})
    phrases = [Phrase(s, c) for c in colours for s in shapes
               if not any(o.colour == c and o.shape == s for o in scene.objects)]
    absent = [s for s in style.shapes if s not in shapes]
    if absent and style.absent_shape and rng.random() < style.absent_shape:
        said = (None, *colours)  # "the square", or "the red square" beside a red circle
        phrases = [Phrase(s, said[int(rng.integers(len(said)))]) for s in absent]
    elif not phrases:  # every colour of the scene on every shape of it
        phrases = [Phrase(s) for s in absent]
        phrases += [Phrase(shapes[0], c) for c in style.colours if c not in colours]
    phrase = phrases[int(rng.integers(len(phrases)))]
    if rng.random() < 0.5:
        return Group("none", expression=Expression("attribute", phrase))
    position = ("leftmost", "rightmost", "top", "bottom")[int(rng.integers(4))]
    return Group("none", expression=Expression("position", phrase, position=position))
