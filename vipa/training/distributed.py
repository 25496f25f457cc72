"""torchrun / DDP plumbing: one process per device; rank 0 logs and writes files."""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from vipa.device import resolve_device
from vipa.errors import VipaError

__all__ = ["DistInfo", "assert_ranks_agree", "broadcast_flag", "cleanup", "init_distributed",
           "rank0_flag", "resolve_device", "shard"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job; ``launched``: torchrun started it (any size)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """A process group is in use: DDP wraps the model, even for one process."""
        return self.launched or self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (any size: ``--nproc-per-node 1`` runs DDP
    too), or one of several processes another launcher started; a plain process gets a
    no-op ``DistInfo()``."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo()  # one process that another launcher numbered: nothing to join
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() \
            and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    logger.info("process group: backend %s, rank %d of %d", dist.get_backend(), rank,
                world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, launched=True)


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when any rank says True (stop requests, NaN losses)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def rank0_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (decisions by one clock, e.g. a time budget)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item() > 0)


def cleanup(info: DistInfo, *, finished: bool = False) -> None:
    """Leave the process group while the interpreter is fully alive.

    A rank that ``finished`` waits at a barrier, so none leaves while a peer still talks
    to it; then the DDP wrappers, which hold the group and sit in reference cycles, are
    collected before the group is destroyed. Left to interpreter shutdown, gloo's threads
    can abort the process (``terminate called without an active exception``) after a
    successful run."""
    if not (info.enabled and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def shard(dataset: Dataset, info: DistInfo) -> Dataset:
    """Rank r evaluates samples r, r + world, ...: no padding, so no sample counts twice."""
    if not info.enabled:
        return dataset
    return Subset(dataset, list(range(info.rank, len(dataset), info.world_size)))


def parameter_checksum(model: torch.nn.Module) -> float:
    """The sum of every parameter in float64: equal weights give bit-equal sums."""
    return sum(float(p.detach().double().sum()) for p in model.parameters())


def assert_ranks_agree(model: torch.nn.Module, info: DistInfo, device: torch.device) -> None:
    """Raise when DDP ranks ended with different weights (gradients must have been shared)."""
    if not info.enabled:
        return
    checksum = torch.tensor([parameter_checksum(model)], dtype=torch.float64, device=device)
    low, high = checksum.clone(), checksum.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise VipaError(f"DDP ranks ended with different weights (parameter sums "
                        f"{low.item():.10e} to {high.item():.10e}); rank {info.rank}'s copy "
                        "is not the one rank 0 saved")
    logger.info("all %d ranks hold the same weights (parameter sum %.10e)", info.world_size,
                checksum.item())
