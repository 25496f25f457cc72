"""Built-in fusion strategies, registered through the plugin hooks like any third party's.

The modules live in :mod:`vipa_plugins.fusion_layers`; registering them by
``"module:attribute"`` keeps this entry point free of torch imports, so
listing plugins or running an exported model stays fast.

- ``early``: gated pixel-word attention (PWAM-like) after each encoder stage;
  at initialisation the gate is 0, so ``early`` equals ``none`` exactly.
- ``late``: the encoder runs unimodally; per level pixels cross-attend to
  words and are FiLM-modulated by the sentence feature (residual).
- ``none``: raw unimodal features.
"""

from __future__ import annotations

from vipa_plugins import hookimpl

LAYERS = "vipa_plugins.fusion_layers"


@hookimpl
def register_fusions(register) -> None:
    register("none", f"{LAYERS}:NoFusion",
             description="No fusion: unimodal features; VEG and decoder do all cross-modal work",
             contract=1)
    register("early", f"{LAYERS}:EarlyFusion",
             description="Gated pixel-word attention after every encoder stage (PWAM-like)",
             contract=1)
    register("late", f"{LAYERS}:LateFusion",
             description="Per-level word cross-attention + sentence FiLM after the encoder",
             contract=1)
