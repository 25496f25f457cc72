"""Which torch device a command runs on."""

from __future__ import annotations

import torch


def resolve_device(requested: str, info=None) -> torch.device:  # noqa: ANN001 - a DistInfo
    """``auto`` -> this process's GPU when there is one, else the CPU.

    Under torchrun (``info.enabled``) ``cuda`` means this rank's own GPU.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and info is not None and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(requested)
