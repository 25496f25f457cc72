"""Training: the step loop and its state, optimiser and schedule, callbacks, DDP, run folders.

``train(cfg)`` runs a whole :class:`~vipa.config.RunConfig`; ``vipa train``
is a thin wrapper over it. Names load lazily, so importing a light module of
this package (``runs``) does not import the whole loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vipa.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'vipa.training' has no attribute {name!r}")
