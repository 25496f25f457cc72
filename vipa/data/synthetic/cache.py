"""The built-in synthetic set in the user's cache: generated once, written atomically."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from vipa.data.synthetic.writer import SPLIT_BY, SYNTHETIC_VERSION, generate_synthetic

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$VIPA_CACHE`` or ``~/.cache/vipa``."""
    return Path(os.environ.get("VIPA_CACHE") or Path.home() / ".cache" / "vipa").expanduser()


def ensure_synthetic(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Generate the default synthetic set once into the cache and return its root.

    Written to a temporary folder and renamed into place, so a crash or a
    second process never leaves (or reads) a half-written set.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / f"synthetic-v{SYNTHETIC_VERSION}-seed{seed}"
    if (final / "synthetic" / f"refs({SPLIT_BY}).p").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=cache))
    try:
        generate_synthetic(temp, seed=seed)
        try:
            os.rename(temp, final)
        except OSError:
            if not (final / "synthetic" / f"refs({SPLIT_BY}).p").is_file():
                raise
            log.info("another process wrote %s first; using it", final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return final
