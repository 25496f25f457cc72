"""The built-in synthetic set in the user's cache: generated once, written atomically."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from vipa.data.synthetic.style import STYLES
from vipa.data.synthetic.writer import SPLIT_BY, SYNTHETIC_VERSION, generate_synthetic

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$VIPA_CACHE`` or ``~/.cache/vipa``."""
    return Path(os.environ.get("VIPA_CACHE") or Path.home() / ".cache" / "vipa").expanduser()


def ensure_synthetic(cache_dir: str | Path | None = None, seed: int = 0,
                     style: str = "default") -> Path:
    """Generate a synthetic set (default style) once into the cache and return its root.

    Written to a temporary folder and renamed into place, so a crash or a
    second process never leaves (or reads) a half-written set.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dataset = STYLES[style].dataset
    final = cache / f"{dataset}-v{SYNTHETIC_VERSION}-seed{seed}"
    done = final / dataset / f"refs({SPLIT_BY}).p"
    if done.is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".synthetic-tmp-", dir=cache))
    try:
        generate_synthetic(temp, seed=seed, style=style)
        try:
            os.rename(temp, final)
        except OSError:
            if not done.is_file():
                raise
            log.info("another process wrote %s first; using it", final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return final
