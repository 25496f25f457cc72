"""Typed errors raised by the library.

The library never prints or exits; the CLI (`vipa_cli`) maps these classes to
one-line messages and exit codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VipaError(Exception):
    """Base class of every error vipa raises on purpose."""


class UsageError(VipaError):
    """The user asked for something that cannot exist (bad name, bad option)."""


class UnknownNameError(UsageError):
    """A plugin-provided name (encoder, fusion, ...) that no plugin registered."""

    kind = "name"

    def __init__(self, name: str, known: Iterable[str], hint: str = "") -> None:
        self.name = name
        self.known = sorted(known)
        message = f"unknown {self.kind} {name!r}"
        close = difflib.get_close_matches(name, self.known, n=1, cutoff=0.5)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        message += "; known: " + (", ".join(self.known) if self.known else "none")
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class UnknownEncoderError(UnknownNameError):
    kind = "encoder"


class UnknownFusionError(UnknownNameError):
    kind = "fusion"


class ConfigError(UsageError):
    """A configuration file or override that does not fit the config schema."""


class PluginError(VipaError):
    """A plugin that cannot be used: duplicate names, broken hooks, failed import."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name."""


class WeightsNotFoundError(VipaError):
    """Pretrained weights were asked for and are not available offline."""


class CheckpointError(VipaError):
    """A checkpoint that is missing, corrupt, or does not match the model asked for."""


class DataError(VipaError):
    """A dataset, image or annotation file that is missing or unreadable."""
