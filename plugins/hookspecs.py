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
    ``factory(**options)`` returns a
    :class:`vipa_plugins.contracts.VisionLanguageEncoder`.
    """


@hookspec
def register_fusions(register: Register) -> None:
    """Register fusion strategies.

    Call ``register(name, factory, description=...)`` once per fusion, where
    ``factory(out_channels=..., text_dim=..., **options)`` returns a
    :class:`vipa_plugins.contracts.Fusion`.
    """
