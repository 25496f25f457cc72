"""How a synthetic set looks and speaks: its shapes, palette and wordings.

The ``default`` style is the built-in set every recipe is tuned on; its
sentences are drawn from :data:`GRAMMAR`, several ways of saying each thing,
and its ``reworded`` split says the val objects in :data:`REWORDED`'s
phrasings, which no other split uses (``vipa eval --split reworded``). The
``heldout`` style shares the scene logic and the expression kinds (attribute,
position, relation) but nothing a recipe could be tuned to: other shapes,
another palette, other size words and other sentence templates. It is for
checking that a recipe generalises (``--data synthetic-heldout``), never for
choosing one. ``gres`` adds phrases for several objects or none, ``wide`` says the
default set's phrases in the wider :data:`WIDE`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vipa.data.synthetic.language import RELATIONS, Expression
from vipa.data.synthetic.scene import COLOURS, SHAPES
from vipa.data.synthetic.wording import Wording
from vipa.errors import DataError


@dataclass(frozen=True)
class Style:
    """Shapes (each drawn by :func:`~vipa.data.synthetic.render.polygon`), palette and wording.

    ``wording`` says the train, val and test sentences; ``reworded``, where a
    style has one, says the ``reworded`` split: the val objects in phrasings
    (words, templates, word order) that no ``wording`` sentence uses.
    """

    name: str
    dataset: str  # the dataset name, and the folder it is written to under the root
    shapes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    wording: Wording
    reworded: Wording | None = None
    # Phrases that match several objects or none (:mod:`~vipa.data.synthetic.groups`), as a
    # share of all phrases; 0: every phrase refers to exactly one object.
    generalized: float = 0.0
    # Of the phrases that match nothing, the share naming a shape the scene lacks ("the
    # square", "the red square" beside a red circle), where it lacks one; 0: a colour and
    # a shape the scene has but never together first, what it lacks only where it has none.
    absent_shape: float = 0.0

    def text(self, expression: Expression, rng: np.random.Generator,
             reworded: bool = False) -> str:
        """A sentence for ``expression`` in this style's (or its reworded) wording."""
        wording = self.reworded if reworded else self.wording
        assert wording is not None, f"style {self.name} has no reworded wording"
        return wording.say(expression, rng)

    def read(self, text: str, reworded: bool = False) -> Expression | None:
        """The expression a sentence of this style's (or its reworded) wording means, or None."""
        wording = self.reworded if reworded else self.wording
        return None if wording is None else wording.read(text, self.shapes, tuple(self.colours))


def _mirror(templates: tuple[str, ...]) -> tuple[str, ...]:
    """The right-hand twin of left-hand templates."""
    return tuple(t.replace("leftmost", "rightmost").replace("left", "right") for t in templates)


_LEFTMOST = ("the leftmost {phrase}", "the {phrase} on the left", "the left {phrase}",
             "the {phrase} furthest left")
_LEFT_OF = ("the {phrase} left of the {anchor}", "the {phrase} to the left of the {anchor}",
            "the {phrase} on the left of the {anchor}")
# What the built-in set says: several ways for each size, shape, position and relation.
GRAMMAR = Wording(
    size_words={"small": ("small", "little"), "big": ("big", "large")},
    shape_words={"circle": ("circle", "disc"), "square": ("square", "box")},
    attribute=("the {phrase}",),
    positions={"leftmost": _LEFTMOST, "rightmost": _mirror(_LEFTMOST),
               "top": ("the {phrase} at the top", "the top {phrase}", "the topmost {phrase}",
                       "the upper {phrase}"),
               "bottom": ("the {phrase} at the bottom", "the bottom {phrase}",
                          "the bottommost {phrase}", "the lower {phrase}")},
    relations={"left of": _LEFT_OF, "right of": _mirror(_LEFT_OF),
               "above": ("the {phrase} above the {anchor}", "the {phrase} over the {anchor}"),
               "below": ("the {phrase} below the {anchor}", "the {phrase} under the {anchor}")},
    bare=0.15,
)

_FAR_LEFT = ("the {phrase} farthest to the left", "the {phrase} on the far left",
             "the left-most {phrase}")
_SIDE_LEFT = ("the {phrase} on the left side of the {anchor}",
              "the {phrase} that is left of the {anchor}")
# The reworded split's phrasings: other words for sizes and a colour, the colour before
# the size, other constructions for every position and relation; no GRAMMAR sentence
# reads like one of these (tests/test_synthetic.py checks it).
REWORDED = Wording(
    size_words={"small": ("tiny",), "big": ("huge",)},
    colour_words={"purple": ("violet",)},
    attribute=("the {phrase} in the picture", "the {phrase} here"),
    positions={"leftmost": _FAR_LEFT, "rightmost": _mirror(_FAR_LEFT),
               "top": ("the highest {phrase}", "the {phrase} nearest the top",
                       "the uppermost {phrase}"),
               "bottom": ("the lowest {phrase}", "the {phrase} nearest the bottom",
                          "the lowermost {phrase}")},
    relations={"left of": _SIDE_LEFT, "right of": _mirror(_SIDE_LEFT),
               "above": ("the {phrase} higher than the {anchor}",
                         "the {phrase} sitting above the {anchor}"),
               "below": ("the {phrase} beneath the {anchor}",
                         "the {phrase} lower than the {anchor}")},
    colour_first=True,
    several=("each {thing}", "all of the {things}"), two=("the pair of {things}",),
    pair=("both the {a} and the {b}",),
)

DEFAULT = Style(name="default", dataset="synthetic", shapes=SHAPES, colours=COLOURS,
                wording=GRAMMAR, reworded=REWORDED)


_WIDE_LEFTMOST = ("the {phrase} most to the left", "the {phrase} closest to the left edge")
_WIDE_LEFT_OF = ("the {phrase} located left of the {anchor}",
                 "the {phrase} just left of the {anchor}",
                 "the {phrase} left of where the {anchor} is")
# Every GRAMMAR way and more, none of them a REWORDED one (tests/test_synthetic.py checks
# it): a tail after the noun, "closest to" an edge, more words between a phrase and its
# anchor. Trained on it, the README command read the reworded split no better on the mean
# of 3 seeds, and val level (docs/results.md, "A wider training wording").
WIDE = replace(
    GRAMMAR,
    attribute=("the {phrase}", "the {phrase} in the image", "the {phrase} in this scene",
               "the {phrase} there"),
    positions={"leftmost": (*_LEFTMOST, *_WIDE_LEFTMOST),
               "rightmost": _mirror((*_LEFTMOST, *_WIDE_LEFTMOST)),
               "top": (*GRAMMAR.positions["top"], "the {phrase} closest to the top",
                       "the {phrase} up top", "the top-most {phrase}"),
               "bottom": (*GRAMMAR.positions["bottom"], "the {phrase} closest to the bottom",
                          "the {phrase} down at the bottom", "the bottom-most {phrase}")},
    relations={"left of": (*_LEFT_OF, *_WIDE_LEFT_OF),
               "right of": _mirror((*_LEFT_OF, *_WIDE_LEFT_OF)),
               "above": (*GRAMMAR.relations["above"], "the {phrase} placed above the {anchor}",
                         "the {phrase} further up than the {anchor}"),
               "below": (*GRAMMAR.relations["below"], "the {phrase} placed below the {anchor}",
                         "the {phrase} further down than the {anchor}")},
)

HELDOUT = Style(
    name="heldout", dataset="synthetic-heldout",
    shapes=("hexagon", "diamond", "cross", "pentagon"),
    colours={"orange": (240, 130, 20), "cyan": (30, 175, 200), "pink": (230, 110, 170),
             "brown": (125, 80, 40), "grey": (110, 110, 110)},
    wording=Wording(
        size_words={"small": ("little",), "big": ("large",)}, attribute=("the only {phrase}",),
        positions={"leftmost": ("the {phrase} furthest to the left",),
                   "rightmost": ("the {phrase} furthest to the right",),
                   "top": ("the highest {phrase}",), "bottom": ("the lowest {phrase}",)},
        relations={"left of": ("the {phrase} to the left of the {anchor}",),
                   "right of": ("the {phrase} to the right of the {anchor}",),
                   "above": ("the {phrase} over the {anchor}",),
                   "below": ("the {phrase} under the {anchor}",)},
        several=("each and every {thing}", "the {things} together"), two=("the {thing} pair",),
        pair=("the {a} plus the {b}",)),
)

# The default set plus phrases that match several objects or none (a quarter of all), in
# gRefCOCO's terms a generalized set: --data synthetic-gres.
GRES = replace(DEFAULT, name="gres", dataset="synthetic-gres", generalized=0.25)

# The default set's scenes and reworded phrasings, its other splits said in :data:`WIDE`
# (--data synthetic-wide).
WIDE_STYLE = replace(DEFAULT, name="wide", dataset="synthetic-wide", wording=WIDE)

STYLES: dict[str, Style] = {style.name: style for style in (DEFAULT, HELDOUT, GRES, WIDE_STYLE)}
BY_DATASET: dict[str, Style] = {style.dataset: style for style in STYLES.values()}
assert set(RELATIONS) == set(GRAMMAR.relations) == set(REWORDED.relations) == set(WIDE.relations)


def parse_expression(text: str) -> Expression:
    """The expression a sentence of the built-in set means (either wording); DataError if none."""
    expression = DEFAULT.read(text) or DEFAULT.read(text, reworded=True)
    if expression is None:
        raise DataError(f"cannot parse expression {text!r}")
    return expression
