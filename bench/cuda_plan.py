"""What ``python -m bench.cuda`` runs: the GPU sizes, the ``--dry-run`` sizes, and its clock.

One :class:`Sizes` per mode: the real check on a GPU, and the dry run that
executes the same code on the CPU with tiny models in seconds. A
:class:`Context` carries the device, the sizes, a scratch folder and the
deadline every section checks before it starts more work.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# In run order; the compiling sections go last: they take what time is left.
SECTIONS = ("machine", "tests", "recipe", "paper_train", "data", "onnx", "ddp", "inference",
            "compile", "fast_train")

# Dense bf16 tensor-core peak by card name (the vendors' datasheets, no sparsity).
BF16_PEAK_TFLOPS = (
    (r"H100.*PCIe", 756.5), (r"H100 NVL", 835.5), (r"H200 NVL", 835.5),
    (r"H100", 989.4), (r"H200", 989.4), (r"GH200", 989.4),  # SXM: "NVIDIA H100 80GB HBM3"
    (r"A100", 312.0), (r"L40S", 362.0), (r"A10\b", 125.0), (r"L4\b", 121.0),
)

TINY_MODEL = ("encoder.name=tiny", "encoder.preset=micro", "image_size=32", "veg.k=4",
              "decoder.dim=16")
TINY_SWIN = ("encoder.preset=micro", "image_size=64", "veg.k=4", "decoder.dim=16")


@dataclass(frozen=True)
class Sizes:
    """How much each section does; :data:`GPU` and :data:`DRY` are the two in use."""

    device: str = "cuda"
    budget_s: float = 330.0
    matmul_n: int = 8192
    tests_timeout_s: int = 150
    # model overrides of every section's preset (the dry run's tiny model)
    model_overrides: tuple[str, ...] = ()
    # the Swin model whose window attention is timed both ways (the dry run's: micro)
    swin_overrides: tuple[str, ...] = ()
    recipe_steps: int = 300
    recipe_precisions: tuple[str, ...] = ("off", "bf16")
    recipe_overrides: tuple[str, ...] = ()
    paper_steps: int = 30
    paper_warmup: int = 5
    batch_ladder: tuple[int, ...] = (16, 32, 64, 128)
    infer_batches: tuple[int, ...] = (1, 8, 32, 64)
    infer_runs: int = 10
    compile_backend: str = "inductor"
    compile_min_s: float = 90.0  # no compile is started with less time left
    profile_steps: int = 5
    fast_batches: tuple[int, ...] = (8, 32)
    fast_steps: int = 20
    fast_warmup: int = 3
    loader_workers: tuple[int, ...] = (0, 4, 8, 16)
    loader_batches: int = 30
    ddp_timeout_s: int = 150
    tiny_data: bool = False  # a small generated set instead of the built-in one


GPU = Sizes()
DRY = Sizes(device="cpu", budget_s=600.0, matmul_n=256, tests_timeout_s=120,
            model_overrides=TINY_MODEL, swin_overrides=TINY_SWIN, recipe_steps=4,
            recipe_precisions=("off",),
            recipe_overrides=("train.batch_size=2",), paper_steps=4,
            paper_warmup=1, batch_ladder=(4,), infer_batches=(1, 2), infer_runs=2,
            compile_backend="eager", compile_min_s=0.0, profile_steps=1,
            fast_batches=(2,), fast_steps=2, fast_warmup=1,
            loader_workers=(0, 1), loader_batches=2,
            ddp_timeout_s=120, tiny_data=True)


@dataclass
class Context:
    """The run's device, sizes, scratch folder, deadline and what the sections found."""

    sizes: Sizes
    device: torch.device
    scratch: Path
    deadline: float
    data_root: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        """Wait for queued device work, so a host clock reads finished work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def overrides(self, *more: str) -> list[str]:
        """The sizes' model overrides (random encoder weights: nothing is downloaded), then
        ``more``."""
        return ["encoder.weights=random", *self.sizes.model_overrides, *more]

    def data_options(self) -> dict[str, Any]:
        """``resolve_config`` options for the built-in data (or the dry run's small set)."""
        if self.data_root is not None:
            return {"data": "synthetic", "data_root": str(self.data_root)}
        return {"data": "synthetic"}


def bf16_peak_tflops(card: str) -> float | None:
    """The datasheet's dense bf16 peak of a card, by name; None for a card not listed."""
    for pattern, peak in BF16_PEAK_TFLOPS:
        if re.search(rf"\b{pattern}", card):
            return peak
    return None
