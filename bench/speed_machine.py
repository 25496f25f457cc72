"""The machine a benchmark runs on: what it is (versions, CPU, GPUs, load) and how it runs.

:func:`machine_info` goes into every benchmark's report; the device helpers
(which devices, which precision, inference mode with autocast) are
``python -m bench.speed``'s.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def machine_info(devices: list[torch.device]) -> dict[str, Any]:
    """What the numbers depend on: versions, CPU, threads, GPUs, load, date."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "devices": [],
    }
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
        info["devices"].append({"device": str(device), "name": name})
    return info


def resolve_devices(spec: str | None) -> list[torch.device]:
    """``None``: the CPU plus CUDA when present; ``auto``: CUDA if present else CPU."""
    if spec is None:
        names = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    elif spec == "auto":
        names = ["cuda" if torch.cuda.is_available() else "cpu"]
    else:
        names = [name.strip() for name in spec.split(",") if name.strip()]
    devices = [torch.device(name) for name in names]
    for device in devices:
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    return devices


def precision(device: torch.device) -> str:
    """CUDA runs in bf16 autocast (what a GPU deployment would use); the CPU in fp32."""
    return "bf16-autocast" if device.type == "cuda" else "fp32"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """``torch.inference_mode`` plus, on CUDA, bf16 autocast."""
    with torch.inference_mode(), autocast(device):
        yield


def is_oom(error: BaseException) -> bool:
    """The device ran out of memory (the error type differs across torch versions)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or "out of memory" in str(error).lower()


def one_line(error: BaseException) -> str:
    """``Type: first line`` of an error, short enough for a table cell."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
