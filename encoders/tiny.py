"""`tiny`: a small conv + bag-of-words encoder (tests and the plugin-authoring example).

This entry point only registers it; the encoder is in
:mod:`vipa_encoders.tiny_encoder` and imported when one is built, so the
registration costs no torch import.
"""

from __future__ import annotations

from vipa_plugins import hookimpl

# preset -> conv width
PRESETS = {"micro": 8, "tiny": 16, "small": 32}


@hookimpl
def register_encoders(register) -> None:
    register("tiny", "vipa_encoders.tiny_encoder:build_tiny",
             description="Tiny conv pyramid + hashed bag-of-words text; tests and plugin example",
             presets=tuple(PRESETS), sizes={"cpu": "small"}, contract=2)
