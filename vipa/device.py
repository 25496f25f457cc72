"""Which torch device a command runs on, and a one-line error for one that is not there."""

from __future__ import annotations

import torch

from vipa.errors import UsageError


def resolve_device(requested: str, info=None) -> torch.device:  # noqa: ANN001 - a DistInfo
    """``auto`` -> this process's GPU when there is one, else the CPU.

    Also takes what people type from other tools: ``0`` (GPU 0), ``gpu``,
    ``cuda:N``, ``mps``. Under torchrun (``info.enabled``)
    ``cuda`` means this rank's own GPU. A device this machine does not have is
    a :class:`UsageError` that says what it does have.
    """
    text = str(requested).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "gpu":
        text = "cuda"
    if "," in text:
        raise UsageError(f"--device {requested!r}: one device per process; to train on "
                         "several GPUs use torchrun --nproc-per-node N -m vipa_cli train "
                         "(docs/training.md)")
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or N "
                         f"(this machine has {available()})") from None
    _check_present(device, requested)
    if device.type == "cuda" and device.index is None and info is not None and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def available() -> str:
    """What this machine offers, in words: ``cpu`` and the GPUs torch sees."""
    found = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        found.append(f"{count} CUDA GPU{'s' if count > 1 else ''} (cuda:0"
                     f"{f'..cuda:{count - 1}' if count > 1 else ''})")
    if torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join(found)


def _check_present(device: torch.device, requested: str) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise UsageError(f"device {requested!r} is not available: this machine has "
                             f"{available()}; use --device cpu or auto")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {requested!r} is not available: this machine has "
                         f"{available()}")
    elif device.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise UsageError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or N "
                         f"(this machine has {available()})")
