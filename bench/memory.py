"""Peak memory of one call: CUDA allocator peaks, or peak RSS on the CPU.

On Linux the CPU probe resets the resident-set high-water mark (``VmHWM``)
through ``/proc/self/clear_refs`` before the call; where that is not allowed it
falls back to the growth of ``ru_maxrss`` (a lower bound).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
from collections.abc import Callable
from pathlib import Path

import torch


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS so the next call's pages show up in RSS again."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _can_reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kb("VmHWM")
    except OSError:
        return False
    return True


def memory_method(device: torch.device) -> str:
    """How peak memory is measured on ``device`` (stored in the output)."""
    if device.type == "cuda":
        return ("torch.cuda.max_memory_allocated during one runtime call minus the memory "
                "allocated before it, plus the model's weights")
    if _can_reset_hwm():
        return ("peak RSS during one runtime call (VmHWM, reset through /proc/self/clear_refs) "
                "minus RSS before it (after gc and malloc_trim), plus the model's weights")
    return ("growth of resource.getrusage ru_maxrss over one runtime call, plus the model's "
            "weights (a lower bound: only growth above earlier peaks is seen)")


def _cuda_extra_mb(fn: Callable[[], object], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _cpu_extra_mb(fn: Callable[[], object]) -> float:
    _malloc_trim()
    if _can_reset_hwm():
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        fn()
        return max(_status_kb("VmHWM") - before, 0) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, 0) * scale / 2**20


def peak_extra_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Extra memory one call needs above what is allocated before it, in MiB."""
    gc.collect()
    return _cuda_extra_mb(fn, device) if device.type == "cuda" else _cpu_extra_mb(fn)


def weights_mb(model: torch.nn.Module) -> float:
    """Bytes of parameters and buffers, in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20
