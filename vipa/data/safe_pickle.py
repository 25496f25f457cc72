"""Load untrusted pickles (the RefCOCO ``refs(*).p`` files) without running code.

A pickle can name any importable callable and call it while loading, so a
file from the internet is a program. RefCOCO refs need only lists, dicts,
strings and numbers, which pickle encodes with opcodes that never import
anything; ``find_class`` is the single door to importing, and it stays shut.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from vipa.errors import DataError


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.reference = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits plain containers and scalars only."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        raise _ForbiddenGlobal(module, name)


def loads_plain(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing no globals; ``source`` names it in errors.

    ``encoding="latin1"`` lets protocol-2 pickles written by Python 2 (the
    original RefCOCO files) load their byte strings as ``str``.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _ForbiddenGlobal as error:
        raise DataError(
            f"refusing to load {source}: pickle references {error.reference} "
            "(only plain containers and scalars are allowed)"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as error:
        raise DataError(f"corrupt pickle {source}: {type(error).__name__}: {error}") from None


def load_plain_pickle(path: str | Path) -> Any:
    """Read and unpickle a file with :func:`loads_plain`; missing file -> DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    return loads_plain(data, str(path))
