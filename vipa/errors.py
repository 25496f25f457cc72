"""Typed errors raised by the library, and the small helpers that keep their messages one line.

The library never prints or exits; the CLI (`vipa_cli`) maps these classes to
one-line messages and exit codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# How alike a misspelt name must be to a known one before it is suggested.
SUGGEST_CUTOFF = 0.6


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's message, or its type name when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) so a message stays on one line."""
    return " ".join(str(text).split())


def shorten(text: str, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis: for echoing a
    user's phrase in a message without repeating a whole paragraph."""
    text = one_line(text)
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name``, when one is alike enough to suggest."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=SUGGEST_CUTOFF)
    return found[0] if found else None


def did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the closest candidate, or ``""`` when none is close."""
    best = closest(name, candidates)
    return f" (did you mean {prefix + best!r}?)" if best else ""


def distribution_label(distribution: str | None, version: str | None) -> str:
    """``"name version"`` of an installed distribution, ``""`` when unknown."""
    return f"{distribution} {version or ''}".strip() if distribution else ""


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
        message = f"unknown {self.kind} {name!r}{did_you_mean(name, self.known)}"
        message += "; known: " + (", ".join(self.known) if self.known else "none")
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class UnknownEncoderError(UnknownNameError):
    kind = "encoder"


class UnknownFusionError(UnknownNameError):
    kind = "fusion"


class UnknownTokenizerError(UnknownNameError):
    kind = "tokenizer"


class UnknownLoggerError(UnknownNameError):
    kind = "logger"


class ConfigError(UsageError):
    """A configuration file or override that does not fit the config schema."""


class EmptyPhraseError(UsageError):
    """A phrase that is empty or only whitespace: there is nothing to segment."""


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


class ExportError(VipaError):
    """An export that failed, or whose output differs from PyTorch beyond the tolerance."""


class RunLockedError(VipaError):
    """Another live process is writing the run directory asked for."""


class RunExistsError(UsageError):
    """A new run was asked for in a folder that holds an earlier run's files."""


class TrainingDivergedError(VipaError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
