"""Checks of config values beyond their types: durations, ranges, choices, combinations."""

from __future__ import annotations

import re

from vipa.errors import ConfigError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?"
                       r"\s*(?:(\d+(?:\.\d+)?)\s*s?)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """``"15m"``, ``"1h30m"``, ``"14m45s"``, ``"90"`` (seconds) -> seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match or not any(match.groups()):
            raise ConfigError(f"train.time_budget: {text!r} is not a duration; use e.g. 15m, "
                              "1h30m, 14m45s or a number of seconds")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * _UNITS["h"] + minutes * _UNITS["m"] + secs
    if seconds <= 0:
        raise ConfigError(f"train.time_budget: {text!r} must be longer than zero")
    return seconds
