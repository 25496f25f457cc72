"""A checkpoint's traced TorchScript copy, cached, so a CPU predict skips building the model.

Building a checkpoint's model imports its encoder's libraries (timm and
transformers for swin-bert: most of a ``vipa predict`` process's start,
docs/results.md "Cold start"). The first CPU run on a checkpoint traces it,
as ``vipa export --format torchscript`` does, parity check included, into
``$VIPA_CACHE/traced/<key>/``; later runs load that copy with torch alone.
The key hashes the checkpoint's bytes with the vipa and torch versions, so a
retrained or upgraded model never meets a stale copy. A checkpoint that does
not trace (a plugin's data-dependent code, parity over tolerance) is
remembered as such and runs as a PyTorch model. ``VIPA_TRACE_CACHE=off``
turns the cache off; CUDA devices never use it (a trace bakes in its device).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vipa.cache import build_once, default_cache_dir, file_key
from vipa.errors import DataError, ExportError, first_line
from vipa.version import __version__

logger = logging.getLogger(__name__)

TRACE_FILE = "model.pt"
FAILED_FILE = "not-traceable.txt"  # why the checkpoint runs as a PyTorch model instead


def trace_key(checkpoint: Path) -> str:
    """Hex digest of the checkpoint's bytes, vipa's version and torch's version; for a model
    folder (``vipa package``), of its weights and its ``config.json``."""
    import torch

    header = f"vipa {__version__} torch {torch.__version__}"
    if checkpoint.is_dir():
        from vipa.hub import CONFIG, WEIGHTS

        config = (checkpoint / CONFIG).read_text(encoding="utf-8", errors="replace")
        return file_key(checkpoint / WEIGHTS, f"{header}\n{config}")
    return file_key(checkpoint, header)


def _trace_into(checkpoint: Path, folder: Path) -> None:
    """Trace ``checkpoint`` (a file or a model folder) into ``folder``, or record there why
    it does not trace."""
    from vipa.checkpoint import build_from
    from vipa.hub import read_folder
    from vipa.inference.export import export_checkpoint, export_model

    try:
        if checkpoint.is_dir():
            export_model(build_from(read_folder(checkpoint)), folder / TRACE_FILE,
                         "torchscript", checkpoint=checkpoint)
        else:
            export_checkpoint(checkpoint, folder / TRACE_FILE, "torchscript")
    except ExportError as error:  # the trace failed or missed the parity check
        for stale in folder.iterdir():
            stale.unlink()
        (folder / FAILED_FILE).write_text(first_line(error) + "\n")


def traced_copy(checkpoint: Path) -> Path | None:
    """The cached trace of ``checkpoint`` (made now if missing); None if it does not trace."""
    folder = default_cache_dir() / "traced" / trace_key(checkpoint)
    try:
        build_once(folder, lambda temp: _trace_into(checkpoint, temp),
                   lambda root: (root / TRACE_FILE).is_file() or (root / FAILED_FILE).is_file())
    except (OSError, DataError) as error:  # an unwritable cache only costs speed
        logger.info("no traced copy of %s (%s); running it as a PyTorch model", checkpoint,
                    first_line(error))
        return None
    if (folder / FAILED_FILE).is_file():
        logger.info("%s runs as a PyTorch model: %s", checkpoint,
                    (folder / FAILED_FILE).read_text().strip())
        return None
    return folder / TRACE_FILE
