"""Ways to say an expression: the words and templates a sentence is drawn from; reading one back.

A :class:`Wording` holds, for every part of an expression, the ways a
sentence may say it: words for each size, colour and shape, templates for
each position and relation, the word order of a noun phrase, and how often
the leading "the" is dropped (typed queries often drop it). One way is
drawn per sentence. :meth:`Wording.read` inverts it: the one expression a
sentence of this wording means, or None.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vipa.data.synthetic.language import Expression, Phrase
from vipa.data.synthetic.scene import TEXTURES

_SLOT = re.compile(r"\\\{(phrase|anchor)\\\}")


def pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    """One of ``options``; a single option draws nothing (a one-way wording keeps its stream)."""
    return options[0] if len(options) == 1 else options[int(rng.integers(len(options)))]


@functools.cache
def template_pattern(template: str) -> re.Pattern[str]:
    """The template as a regex with named ``phrase`` / ``anchor`` groups (compiled once)."""
    return re.compile(_SLOT.sub(lambda m: f"(?P<{m.group(1)}>[a-z ]+?)", re.escape(template)))


@dataclass(frozen=True)
class Wording:
    """The ways of saying each part of an expression (templates hold ``{phrase}``, ``{anchor}``)."""

    size_words: Mapping[str, tuple[str, ...]]
    attribute: tuple[str, ...]
    positions: Mapping[str, tuple[str, ...]]
    relations: Mapping[str, tuple[str, ...]]
    colour_words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # else the name
    shape_words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # else the name
    colour_first: bool = False  # "the red small circle" instead of "the small red circle"
    bare: float = 0.0  # share of sentences without their leading "the"
    # Phrases for several objects (vipa.data.synthetic.groups): {things} the plural noun
    # phrase, {thing} the singular; ``two`` when the group has two, ``pair`` names two
    # objects each on its own ({a}, {b}).
    several: tuple[str, ...] = ("all the {things}", "every {thing}", "all {things}",
                                "the {things}")
    two: tuple[str, ...] = ("both {things}", "the two {things}")
    pair: tuple[str, ...] = ("the {a} and the {b}", "the {a} and {b}")

    def phrase(self, phrase: Phrase, rng: np.random.Generator) -> str:
        size = None if phrase.size is None else pick(self.size_words[phrase.size], rng)
        colour = None if phrase.colour is None else pick(
            self.colour_words.get(phrase.colour, (phrase.colour,)), rng)
        first, second = (colour, size) if self.colour_first else (size, colour)
        words = [w for w in (first, second, phrase.texture) if w is not None]
        return " ".join([*words, pick(self.shape_words.get(phrase.shape, (phrase.shape,)), rng)])

    def say(self, expression: Expression, rng: np.random.Generator) -> str:
        """One sentence for ``expression``, its ways drawn from ``rng``."""
        if expression.kind == "attribute":
            template = pick(self.attribute, rng)
        elif expression.kind == "position":
            assert expression.position is not None
            template = pick(self.positions[expression.position], rng)
        else:
            assert expression.relation is not None
            template = pick(self.relations[expression.relation], rng)
        values = {"phrase": self.phrase(expression.phrase, rng)}
        if expression.anchor is not None:
            values["anchor"] = self.phrase(expression.anchor, rng)
        text = template.format(**values)
        if self.bare and rng.random() < self.bare:
            text = text.removeprefix("the ")
        return text

    def templates(self) -> list[tuple[str, str | None, str]]:
        """(kind, position or relation, template) for every template of this wording."""
        return ([("attribute", None, t) for t in self.attribute]
                + [("position", p, t) for p, ts in self.positions.items() for t in ts]
                + [("relation", r, t) for r, ts in self.relations.items() for t in ts])

    def read_phrase(self, text: str, shapes: tuple[str, ...],
                    colours: tuple[str, ...]) -> Phrase | None:
        """The phrase ``text`` says in this wording (strict word order), or None."""
        *attributes, noun = text.split() or [""]
        shape_of = {w: shape for shape, ws in self.shape_words.items() for w in ws}
        shape = shape_of.get(noun, None if noun in self.shape_words else noun)
        if shape not in shapes:
            return None
        renamed = {w: colour for colour, ws in self.colour_words.items() for w in ws}
        sizes = {w: size for size, ws in self.size_words.items() for w in ws}
        order = ("colour", "size", "texture") if self.colour_first else ("size", "colour",
                                                                           "texture")
        found: dict[str, str] = {}
        slot = 0
        for word in attributes:
            value = {"size": sizes.get(word),
                     "colour": renamed.get(word, word if word in colours
                                           and word not in self.colour_words else None),
                     "texture": word if word in TEXTURES else None}
            while slot < len(order) and value[order[slot]] is None:
                slot += 1
            if slot == len(order):
                return None
            found[order[slot]] = value[order[slot]]  # type: ignore[assignment]
            slot += 1
        return Phrase(shape=shape, **found)

    def read(self, text: str, shapes: tuple[str, ...],
             colours: tuple[str, ...]) -> Expression | None:
        """The one expression ``text`` means in this wording, or None (unknown or ambiguous)."""
        text = " ".join(text.strip().lower().split())
        tries = [text] if text.startswith("the ") or not self.bare else [text, f"the {text}"]
        found: set[Expression] = set()
        for candidate in tries:
            for kind, which, template in self.templates():
                match = template_pattern(template).fullmatch(candidate)
                if match is None:
                    continue
                phrase = self.read_phrase(match["phrase"], shapes, colours)
                anchor = (self.read_phrase(match["anchor"], shapes, colours)
                          if kind == "relation" else None)
                if phrase is None or (kind == "relation" and anchor is None):
                    continue
                found.add(Expression(kind, phrase,
                                     position=which if kind == "position" else None,
                                     relation=which if kind == "relation" else None,
                                     anchor=anchor))
        return found.pop() if len(found) == 1 else None
