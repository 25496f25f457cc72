"""Library noise a user of a working command should not see, silenced where it arises.

Each filter names one known message (a deprecation we have measured and
answered, a log line about a config we built ourselves) and applies only
around the call that causes it; nothing is silenced process-wide. With
``--verbose`` (the root logger at INFO) every message shows again, except
transformers' load reports and progress bars (:func:`quiet_transformers`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator


def verbose() -> bool:
    """True under ``--verbose``: library messages are shown, not filtered."""
    return logging.getLogger().isEnabledFor(logging.INFO)


@contextlib.contextmanager
def without_warning(message: str, category: type[Warning] = Warning) -> Iterator[None]:
    """Hide warnings whose text starts with ``message`` (a regex) inside the block."""
    if verbose():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextlib.contextmanager
def without_log_records(source: str) -> Iterator[None]:
    """Drop log records emitted from files whose path contains ``source`` inside the block."""
    if verbose():
        yield
        return
    handlers = logging.getLogger().handlers

    def keep(record: logging.LogRecord) -> bool:
        return source not in record.pathname.replace("\\", "/")

    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


@contextlib.contextmanager
def without_log_message(logger: str, message: str) -> Iterator[None]:
    """Drop records of the logger named ``logger`` whose message starts with ``message``
    inside the block (a filter on that logger, so it holds with no handler configured)."""
    if verbose():
        yield
        return
    target = logging.getLogger(logger)

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(message)

    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' load report, config notes and progress bars off inside the block.

    Even under ``--verbose``: its per-tensor load report (a warning-level table in
    terminal colour codes, about the pooler weights a text tower never uses) and
    its progress bars say nothing about vipa's run, and vipa logs what it loaded
    itself. Errors still show. A no-op when transformers is not loaded.
    """
    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
