"""The training loop: setup from a config, then optimizer steps with callbacks around them.

``train(cfg)`` is a plain function; ``vipa train`` is a thin wrapper over it.
Under torchrun every process runs it; rank 0 alone logs, shows progress and
writes files. The loop itself is the ``for`` over :meth:`Session.batches`;
logging, validation and checkpoints are the callbacks of
:mod:`vipa.training.callbacks`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipa.config import RunConfig, save_config, to_dict
from vipa.config.validate import parse_duration, validate_run
from vipa.errors import DataError
from vipa.progress import ProgressBar, stderr_console
from vipa.training.budget import TimeBudget
from vipa.training.calibration import calibrate_checkpoint
from vipa.training.callbacks import (
    Checkpointer,
    MetricsLog,
    SkipLog,
    StepLogger,
    Validator,
    plot_curves,
)
from vipa.training.distributed import (
    DistInfo,
    assert_ranks_agree,
    broadcast_flag,
    cleanup,
    init_distributed,
    rank0_flag,
)
from vipa.training.runs import check_resumable, claim_run_dir, new_run_dir, run_lock
from vipa.training.session import Session
from vipa.training.trackers import LogLines, RecordSinks, open_loggers

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a run's files are and how it ended."""

    run_dir: Path
    last: Path
    best: Path | None
    step: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when interrupted
    total_steps: int | None = None  # None under a time budget without max_steps
    seconds: float = 0.0  # wall time of this session's training loop
    steps_per_s: float = 0.0  # this session's steps over its loop's wall time
    chosen_on: str = "val"  # the split the best checkpoint was chosen on


@contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and returns cleanly."""
    received: list[str] = []

    def handler(signum, frame):  # noqa: ANN001, ARG001
        received.append(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # signal.signal raises ValueError off the main thread (some test runners).
        with suppress(ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(cfg: RunConfig, *, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> TrainResult:
    """Train a model as ``cfg`` says; with ``resume`` continue ``cfg.train.output``'s run.

    A new run in a folder holding an earlier run's files is refused
    (:class:`~vipa.errors.RunExistsError`) unless ``overwrite`` says to replace it.
    """
    validate_run(cfg)  # library callers get the CLI's checks too
    budget = None
    if cfg.train.time_budget is not None:  # counted from here: setup is part of the budget
        budget = TimeBudget(parse_duration(cfg.train.time_budget), cfg.train.budget_validations)
    info = init_distributed(cfg.train.device)
    finished = False
    try:
        result = _session_run(cfg, info, resume, budget, progress, overwrite)
        finished = True
        return result
    finally:
        cleanup(info, finished=finished)


def _session_run(cfg: RunConfig, info: DistInfo, resume: bool, budget: TimeBudget | None,
                 progress: bool, overwrite: bool) -> TrainResult:
    """One training session in its own frame, so the model is gone when the group closes."""
    run_dir = Path(cfg.train.output) if cfg.train.output else new_run_dir(
        cfg.model.encoder.name, cfg.model.fusion.name)
    if resume:
        check_resumable(cfg, run_dir)
    with run_lock(run_dir) if info.is_main else nullcontext():
        if info.is_main:
            claim_run_dir(run_dir, resume=resume, overwrite=overwrite)
        session = Session(cfg, info, run_dir, resume, budget)
        if info.is_main:
            save_config(cfg, run_dir / "config.yaml")
        return _run(session, progress and info.is_main)


def _run(session: Session, progress: bool) -> TrainResult:
    """The loop with its record sinks: plain log lines instead of a bar when stderr is no
    terminal (batch jobs), and the ``--logger`` loggers, closed however the run ends."""
    sinks = _sinks(session, progress)
    try:
        return _loop(session, progress and sinks.lines is None, sinks)
    finally:
        sinks.close()


def _sinks(session: Session, progress: bool) -> RecordSinks:
    if not session.info.is_main:
        return RecordSinks()
    lines = None
    if progress and not stderr_console().is_terminal:
        total = session.total_steps if session.budget is None else int(session.budget.seconds)
        lines = LogLines(total, _position(session), in_steps=session.budget is None)
    loggers = open_loggers(session.cfg.train.loggers, session.run_dir, to_dict(session.cfg))
    return RecordSinks(lines, loggers)


def _loop(session: Session, progress: bool, sinks: RecordSinks) -> TrainResult:
    cfg, info, parts, budget = session.cfg, session.info, session.parts, session.budget
    t, state = cfg.train, parts.state
    log = MetricsLog(session.run_dir / "metrics.jsonl" if info.is_main else None, sinks)
    validate = Timed(Validator(session.model, session.net, session.val_loader, session.device,
                               cfg, info, log, session.best_path, session.amp), budget,
                     session.confirm_finite)
    checkpoint = Timed(Checkpointer(session.model, cfg, session.last_path, info), budget,
                       session.confirm_finite)

    def on_epoch_end() -> None:
        if not t.val_every and budget is None:
            validate(parts)
        checkpoint(parts)

    stopped_by = None
    started, first_step = time.perf_counter(), state.step
    session.net.train()
    with stop_on_signals() as signals, _progress_bar(session, progress) as bar:
        step_log = StepLogger(log, bar, t.log_every, t.grad_accum, _position(session))
        skips = SkipLog(log, cfg.data.max_skip_share, info.is_main)
        for group in [] if session.finished() else session.batches(on_epoch_end):
            skips.after_batches(group, state.step)
            losses = session.step(group)
            if losses is None:
                continue
            samples = sum(len(batch["text"]) for batch in group if "text" in batch)
            if state.step % t.log_every == 0:  # the log line reads the loss: no NaN in it
                session.confirm_finite()
            step_log.after_step(parts, losses, samples * info.world_size, skips.skipped)
            reason = skips.too_many()
            if reason is not None:
                checkpoint(parts)
                raise DataError(f"{reason}; the run stopped at step {state.step} with a "
                                f"checkpoint in {session.last_path}")
            if budget is not None:
                if rank0_flag(budget.validation_due(), info, session.device):
                    budget.validated += 1
                    validate(parts)
            elif t.val_every and state.step % t.val_every == 0:
                validate(parts)
            if t.checkpoint_every and state.step % t.checkpoint_every == 0:
                checkpoint(parts)
            if broadcast_flag(bool(signals), info, session.device):
                stopped_by = signals[0] if signals else "signal"
                break
            if rank0_flag(session.finished(), info, session.device):
                break
    if stopped_by is None and state.validated_at != state.step:
        validate(parts)
    checkpoint(parts, state.best_metrics)
    if cfg.train.presence_calibration != "off" and stopped_by is None \
            and rank0_flag(session.best_path.is_file(), info, session.device):
        _calibrate(session, log)
    assert_ranks_agree(session.model, info, session.device)
    if info.is_main:
        if stopped_by is not None:
            logger.info("stopped by %s at step %d; checkpoint saved to %s", stopped_by,
                           state.step, session.last_path)
        plot_curves(session.run_dir)
    best = session.best_path if session.best_path.is_file() else None
    total = session.total_steps if session.total_steps < 2**62 else None
    seconds = time.perf_counter() - started
    return TrainResult(session.run_dir, session.last_path, best, state.step,
                       state.best_metrics, stopped_by, total, seconds,
                       (state.step - first_step) / max(seconds, 1e-9), cfg.data.val_split)


def _calibrate(session: Session, log: MetricsLog) -> None:
    """Fit best.safetensors' presence threshold on the validation split
    (``train.presence_calibration``), log the fit and keep its new metrics as the best."""
    state = session.parts.state
    found = calibrate_checkpoint(session.best_path, session.model, session.val_loader,
                                 session.device, session.info, session.cfg.train.threshold,
                                 session.amp, fit_loader=session.calibration_loader)
    if found is None:
        return
    fit, state.best_metrics = found
    log.write({"step": state.step, "presence_calibration": fit, "val": state.best_metrics})
    if session.info.is_main:
        logger.info("presence threshold fitted on %s: logit %.3f (N-acc %.3f, T-acc %.3f on "
                    "%d no-match and %d matching phrases); val oIoU %.4f",
                    session.cfg.data.val_split, fit["presence_offset"], fit["n_acc"],
                    fit["t_acc"], fit["no_match_phrases"], fit["matching_phrases"],
                    state.best_metrics["oIoU"])


class Timed:
    """A validation or checkpoint callback whose duration the time budget holds back.

    ``before`` runs first (the NaN guard: no weights of a diverged step are used).
    """

    def __init__(self, callback, budget: TimeBudget | None,  # noqa: ANN001
                 before: Callable[[], None] = lambda: None) -> None:
        self.callback, self.budget, self.before = callback, budget, before
        self.last: dict[str, float] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.before()
        # The budget's own clock: the reserve must be in the units the budget counts in.
        clock = self.budget.clock if self.budget is not None else time.perf_counter
        start = clock()
        result = self.callback(*args, **kwargs)
        self.last[type(self.callback).__name__] = clock() - start
        if self.budget is not None:  # the end needs one validation and one checkpoint
            self.budget.record_final_work(sum(self.last.values()))
        return result


def _position(session: Session):  # noqa: ANN202 - () -> int
    """What the progress bar counts: steps, or seconds of the time budget."""
    if session.budget is None:
        return lambda: session.parts.state.step
    return lambda: int(session.budget.elapsed())


def _progress_bar(session: Session, enabled: bool) -> ProgressBar:
    budget = session.budget
    if budget is None:
        total, label = session.total_steps, "train"
    else:
        total, label = int(budget.seconds), f"train ({budget.seconds / 60:.4g} min budget, s)"
    return ProgressBar(total, label, enabled, start=_position(session)(),
                       fields="loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                              "{task.fields[rate]:.1f} samples/s  {task.fields[skipped]} skipped",
                       loss=float("nan"), lr=0.0, rate=0.0, skipped=0)
