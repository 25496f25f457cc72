"""Hook specifications: what a vipa plugin can provide.

Hooks follow the register-callback style: the host passes ``register`` and
keeps validation, duplicate detection and bookkeeping to itself, so plugins
stay a few lines long.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT_NAME = "vipa"
ENTRY_POINT_GROUP = "vipa"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback handed to registration hooks."""

    def __call__(self, name: str, factory: Any, *, description: str = "") -> None: ...


@hookspec
def register_encoders(register: Register) -> None:
    """Register vision-language encoders.

    Call ``register(name, factory, description=...)`` once per encoder, where
    ``factory(preset=None, weights="random", image_size=None, **options)``
    returns a :class:`vipa_plugins.contracts.VisionLanguageEncoder`.

    Every factory accepts these three keywords: ``preset`` (a size name such
    as ``micro`` or ``base``; None = the encoder's default), ``weights``
    (``random``, ``pretrained``, or a local path) and ``image_size`` (the
    square input resolution the model will run at; encoders that do not care
    ignore it). Unknown presets raise ``vipa.errors.ConfigError``; weights that
    cannot be found offline raise ``vipa.errors.WeightsNotFoundError``.
    """


@hookspec
def register_fusions(register: Register) -> None:
    """Register fusion strategies.

    Call ``register(name, factory, description=...)`` once per fusion, where
    ``factory(out_channels=..., text_dim=..., **options)`` returns a
    :class:`vipa_plugins.contracts.Fusion`.
    """
