"""Run directories: where a training run writes, and how the latest one is found."""

from __future__ import annotations

import os
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


def run_to_resume(output: Path | None, base: Path = RUNS_DIR) -> Path:
    """The run ``--resume`` continues: ``output``, else the latest run with a checkpoint."""
    run_dir = output or latest_run(base)
    if run_dir is None:
        raise CheckpointError(f"nothing to resume: no run with last.safetensors under {base}/; "
                              "pass --output RUN_DIR")
    return Path(run_dir)


def is_main_process() -> bool:
    """False in every torchrun process but rank 0 (which alone prints and writes)."""
    return int(os.environ.get("RANK", "0")) == 0
