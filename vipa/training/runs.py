"""Run directories: where a training run writes, and how the latest one is found."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vipa.config import RunConfig, flatten, load_preset, resolve_config, saved_run_config, to_dict
from vipa.errors import CheckpointError, ConfigError, RunExistsError, RunLockedError

logger = logging.getLogger(__name__)
LOCK_NAME = ".vipa.lock"
# What --resume may change: how long and how often, where, on what, how it is run (compiled,
# padded: the same numbers). Everything else (the model, the data, the optimisation) would
# make the resumed run another run.
RESUMABLE_KEYS = ("train.epochs", "train.max_steps", "train.time_budget",
                  "train.budget_validations", "train.val_every", "train.checkpoint_every",
                  "train.log_every", "train.device", "train.output", "train.threshold",
                  "data.root", "data.image_dir", "data.num_workers", "data.max_val_samples",
                  "data.on_error", "data.max_skip_share", "train.compile",
                  "train.compile_backend", "train.compile_mode", "train.text_padding")

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


def checkpoint_in(source: str | os.PathLike[str]) -> Path:
    """The checkpoint a user means by ``source``: a run folder's ``best.safetensors`` (else
    its ``last``), said in the log; a resume state is a CheckpointError naming the checkpoint
    beside it; anything else is returned as it is."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "model.safetensors").exists():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                logger.warning("%s is a run folder: using its %s", path, name)
                return path / name
    if path.suffix == ".pt" and ".state" in path.name:
        beside = path.with_name(path.name.split(".state")[0] + ".safetensors")
        raise CheckpointError(f"{path} is a resume state (optimizer and position), not a "
                              f"model: use the checkpoint beside it, {beside}, or continue "
                              f"the run with vipa train --resume --output {path.parent}")
    return path


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


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.vipa.lock`` while a run writes there; refuse a second live writer.

    The lock is an ``flock``: the kernel drops it when its process dies (even
    by kill -9), so a lock file left behind is simply taken over. The lock file
    is removed when the run ends, and so is a run folder this call created
    that holds nothing else.
    """
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = _take_lock(run_dir / LOCK_NAME)
    handle.seek(0)
    if handle.read().strip():
        logger.info("took over the lock of %s left by a process that is gone", run_dir)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    try:
        yield
    finally:
        (run_dir / LOCK_NAME).unlink(missing_ok=True)  # still held: no one else has it
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        if created and not any(run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)


def _take_lock(path: Path):  # noqa: ANN202 - an open text file
    """The lock file at ``path``, open and flocked; RunLockedError when a live run holds it.

    A lock taken on a file that its holder removed in the meantime is let go
    and taken again on the file now at ``path``.
    """
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"{path.parent} is being written by another vipa train "
                                 f"({owner}); wait for it to end or give another --output"
                                 ) from None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


# What a run writes into its folder; ``--overwrite`` removes these and nothing else.
RUN_FILES = ("last.safetensors", "best.safetensors", "metrics.jsonl", "curves.png",
             "config.yaml", "last.state-*.pt", "best.state-*.pt")


def run_files(run_dir: Path) -> list[Path]:
    """The files of an earlier run in ``run_dir`` (none for a new or empty folder)."""
    if not run_dir.is_dir():
        return []
    return sorted({path for pattern in RUN_FILES for path in run_dir.glob(pattern)})


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an earlier one unless told to; ``overwrite`` clears it.

    Called with the run's lock held, so two trainings never race over one folder.
    """
    if resume:
        return
    earlier = run_files(run_dir)
    if not earlier:
        return
    if not overwrite:
        held = "a finished run" if (run_dir / "best.safetensors").is_file() else "a run"
        raise RunExistsError(f"{run_dir} holds {held}: --resume to go on with it, another "
                             "--output for a new run, or --overwrite to replace it")
    for path in earlier:
        path.unlink(missing_ok=True)
    logger.info("--overwrite: removed the earlier run's %d files from %s", len(earlier), run_dir)


def check_resumable(cfg: RunConfig, run_dir: Path) -> None:
    """ConfigError naming every key that differs from the run's saved config and may not."""
    saved = saved_run_config(run_dir)
    if saved is None:
        return
    before, after = flatten(to_dict(saved)), flatten(to_dict(cfg))
    changed = [key for key in sorted(set(before) | set(after))
               if before.get(key) != after.get(key) and key not in RESUMABLE_KEYS]
    if changed:
        detail = ", ".join(f"{key} ({before.get(key)!r} -> {after.get(key)!r})"
                           for key in changed)
        raise ConfigError(f"cannot resume {run_dir} with a changed config: {detail}; these "
                          "must stay as the run started (docs/training.md lists what may change)")


def train_config(recipe: str, options: dict[str, Any], overrides: list[str], *,
                 resume: bool = False, init_from: Path | None = None) -> RunConfig:
    """The config ``vipa train`` runs: a recipe, a resumed run's own config, or a fine-tune.

    ``resume``: the run in ``options["output"]`` (default: the latest) with its
    saved ``config.yaml``; ``init_from``: the recipe with the checkpoint's model.
    """
    base: str | RunConfig = recipe
    if resume:
        run_dir = run_to_resume(options.get("output"))
        saved = run_dir / "config.yaml"
        base = str(saved) if saved.is_file() else recipe
        options = {**options, "output": run_dir}
    elif init_from is not None:
        from vipa.training.finetune import finetune_base  # reads a checkpoint: torch

        base = finetune_base(load_preset(recipe), init_from)
    return resolve_config(base, options, overrides)
