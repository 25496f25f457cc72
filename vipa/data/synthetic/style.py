"""How a synthetic set looks and speaks: its shapes, palette and phrasing templates.

The ``default`` style is the built-in set every recipe is tuned on. The
``heldout`` style shares the scene logic and the expression kinds (attribute,
position, relation) but nothing a recipe could be tuned to: other shapes,
another palette, other size words and other sentence templates. It is for
checking that a recipe generalises (``--data synthetic-heldout``), never for
choosing one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vipa.data.synthetic.language import RELATIONS, Expression, Phrase
from vipa.data.synthetic.scene import COLOURS, SHAPES


@dataclass(frozen=True)
class Style:
    """Shapes (each drawn by :func:`~vipa.data.synthetic.render.polygon`), palette and wording."""

    name: str
    dataset: str  # the dataset name, and the folder it is written to under the root
    shapes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    size_words: dict[str, str]
    attribute: str  # template with {phrase}
    positions: dict[str, str] = field(default_factory=dict)  # position -> template
    relations: dict[str, str] = field(default_factory=dict)  # relation -> template, {anchor}

    def phrase(self, phrase: Phrase) -> str:
        size = self.size_words[phrase.size] if phrase.size is not None else None
        words = [w for w in (size, phrase.colour, phrase.texture) if w is not None]
        return " ".join([*words, phrase.shape])

    def text(self, expression: Expression) -> str:
        """The sentence for ``expression`` in this style's wording."""
        phrase = self.phrase(expression.phrase)
        if expression.kind == "attribute":
            return self.attribute.format(phrase=phrase)
        if expression.kind == "position":
            assert expression.position is not None
            return self.positions[expression.position].format(phrase=phrase)
        assert expression.anchor is not None and expression.relation is not None
        return self.relations[expression.relation].format(
            phrase=phrase, anchor=self.phrase(expression.anchor))


DEFAULT = Style(
    name="default", dataset="synthetic", shapes=SHAPES, colours=COLOURS,
    size_words={"small": "small", "big": "big"}, attribute="the {phrase}",
    positions={"leftmost": "the leftmost {phrase}", "rightmost": "the rightmost {phrase}",
               "top": "the {phrase} at the top", "bottom": "the {phrase} at the bottom"},
    relations={relation: f"the {{phrase}} {relation} the {{anchor}}" for relation in RELATIONS},
)

HELDOUT = Style(
    name="heldout", dataset="synthetic-heldout",
    shapes=("hexagon", "diamond", "cross", "pentagon"),
    colours={"orange": (240, 130, 20), "cyan": (30, 175, 200), "pink": (230, 110, 170),
             "brown": (125, 80, 40), "grey": (110, 110, 110)},
    size_words={"small": "little", "big": "large"}, attribute="the only {phrase}",
    positions={"leftmost": "the {phrase} furthest to the left",
               "rightmost": "the {phrase} furthest to the right",
               "top": "the highest {phrase}", "bottom": "the lowest {phrase}"},
    relations={"left of": "the {phrase} to the left of the {anchor}",
               "right of": "the {phrase} to the right of the {anchor}",
               "above": "the {phrase} over the {anchor}",
               "below": "the {phrase} under the {anchor}"},
)

STYLES: dict[str, Style] = {style.name: style for style in (DEFAULT, HELDOUT)}
BY_DATASET: dict[str, Style] = {style.dataset: style for style in STYLES.values()}
