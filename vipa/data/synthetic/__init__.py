"""The built-in synthetic RIS dataset: coloured shapes and referring expressions.

Written in the RefCOCO format (``refs(vipa).p`` + ``instances.json`` + JPEG
images) and read back by the same loader, so the whole pipeline runs
offline. Every expression is checked to refer to exactly one object, and
every target has a distractor of the same shape or colour, so an image-only
model cannot solve the set.

- :mod:`~vipa.data.synthetic.scene`: shapes, colours, object placement;
- :mod:`~vipa.data.synthetic.language`: expressions, resolver, describer;
- :mod:`~vipa.data.synthetic.wording`: ways of saying an expression, and reading one back;
- :mod:`~vipa.data.synthetic.render`: polygons and images;
- :mod:`~vipa.data.synthetic.style`: shapes, palette and wordings (default, reworded, held-out);
- :mod:`~vipa.data.synthetic.writer`: the COCO / refs files;
- :mod:`~vipa.data.synthetic.cache`: the copy in the user's cache.
"""

from vipa.data.synthetic.cache import default_cache_dir, ensure_synthetic
from vipa.data.synthetic.language import (
    KINDS,
    POSITIONS,
    RELATIONS,
    Expression,
    Phrase,
    describe,
    picks_out,
    resolve,
)
from vipa.data.synthetic.render import polygon, render
from vipa.data.synthetic.scene import (
    COLOURS,
    MARGIN,
    OBJECT_COUNTS,
    RADIUS,
    SHAPES,
    SIZES,
    TEXTURES,
    Obj,
    Scene,
    has_lookalike,
    sample_scene,
)
from vipa.data.synthetic.style import (
    BY_DATASET,
    DEFAULT,
    GRAMMAR,
    HELDOUT,
    REWORDED,
    STYLES,
    Style,
    parse_expression,
)
from vipa.data.synthetic.wording import Wording
from vipa.data.synthetic.writer import (
    LAYOUTS,
    SPLIT_BY,
    SYNTHETIC_VERSION,
    generate_synthetic,
    scene_of,
)

__all__ = [
    "BY_DATASET", "COLOURS", "DEFAULT", "GRAMMAR", "HELDOUT", "KINDS", "LAYOUTS", "MARGIN",
    "OBJECT_COUNTS",
    "POSITIONS", "RADIUS", "RELATIONS", "REWORDED", "SHAPES", "SIZES", "SPLIT_BY", "STYLES",
    "SYNTHETIC_VERSION", "TEXTURES", "Expression", "Obj", "Phrase", "Scene", "Style", "Wording",
    "default_cache_dir", "describe", "ensure_synthetic", "generate_synthetic", "has_lookalike",
    "parse_expression", "picks_out", "polygon", "render", "resolve", "sample_scene", "scene_of",
]
