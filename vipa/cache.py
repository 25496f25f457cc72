"""vipa's cache folder and the one way files are written into it (atomically, once)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def fast_start_cache_enabled() -> bool:
    """The fast-start copies of models (traced checkpoints, optimised ONNX graphs) are used.

    False when ``VIPA_TRACE_CACHE`` is ``off``, ``0``, ``false`` or ``no``.
    """
    return os.environ.get("VIPA_TRACE_CACHE", "on").strip().lower() not in {"off", "0", "false",
                                                                            "no"}


def default_cache_dir() -> Path:
    """``$VIPA_CACHE`` or ``~/.cache/vipa``."""
    return Path(os.environ.get("VIPA_CACHE") or Path.home() / ".cache" / "vipa").expanduser()


def file_key(path: Path, header: str) -> str:
    """A cache key: hex digest of ``header`` (the versions the cached copy depends on) and the
    file's bytes, so a changed file or an upgrade never meets a stale copy."""
    digest = hashlib.sha256(f"{header}\n".encode())
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def build_once(final: Path, build: Callable[[Path], None], done: Callable[[Path], bool]) -> Path:
    """Return folder ``final``, first calling ``build(temp)`` to fill it when not ``done(final)``.

    ``build`` writes into a temporary sibling folder that is then renamed into
    place, so a crash or a second process never leaves (or reads) a half-written
    folder; when two processes race, the first rename wins and both use it.
    """
    if done(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}-tmp-", dir=final.parent))
    try:
        build(temp)
        try:
            os.rename(temp, final)
        except OSError:
            if not done(final):
                raise
            log.info("another process wrote %s first; using it", final)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return final
