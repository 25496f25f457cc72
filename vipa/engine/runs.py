"""Run directories: where a training run writes, and how the latest one is found."""

from __future__ import annotations

import time
from pathlib import Path

from vipa.errors import CheckpointError

RUNS_DIR = Path("runs")


def new_run_dir(encoder: str, fusion: str, base: Path = RUNS_DIR) -> Path:
    """``runs/<date>-<time>-<encoder>-<fusion>``, unique even within one second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = base / f"{stamp}-{encoder}-{fusion}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = base / f"{stamp}-{encoder}-{fusion}-{suffix}"
    return candidate


def latest_run(base: Path = RUNS_DIR, needs: str = "last.safetensors") -> Path | None:
    """The most recently modified run directory holding ``needs``."""
    if not base.is_dir():
        return None
    runs = [p for p in base.iterdir() if (p / needs).is_file()]
    return max(runs, key=lambda p: (p / needs).stat().st_mtime) if runs else None


def default_checkpoint(base: Path = RUNS_DIR) -> Path:
    """The latest run's ``best.safetensors``; a one-line hint when there is none."""
    run = latest_run(base, "best.safetensors")
    if run is None:
        raise CheckpointError(
            f"no checkpoint given and no trained run under {base}/; train one with "
            "`vipa train` or pass --checkpoint PATH"
        )
    return run / "best.safetensors"
