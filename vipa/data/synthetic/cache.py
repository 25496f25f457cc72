"""The built-in synthetic set in the user's cache: generated once, written atomically."""

from __future__ import annotations

from pathlib import Path

from vipa.cache import build_once, default_cache_dir
from vipa.data.synthetic.style import STYLES
from vipa.data.synthetic.writer import SPLIT_BY, SYNTHETIC_VERSION, generate_synthetic

__all__ = ["default_cache_dir", "ensure_synthetic"]


def ensure_synthetic(cache_dir: str | Path | None = None, seed: int = 0,
                     style: str = "default") -> Path:
    """Generate a synthetic set (default style) once into the cache and return its root.

    Written to a temporary folder and renamed into place, so a crash or a
    second process never leaves (or reads) a half-written set.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dataset = STYLES[style].dataset
    return build_once(cache / f"{dataset}-v{SYNTHETIC_VERSION}-seed{seed}",
                      lambda temp: generate_synthetic(temp, seed=seed, style=style),
                      lambda root: (root / dataset / f"refs({SPLIT_BY}).p").is_file())
