"""The sections of ``python -m bench.cuda``: each measures one thing vipa does on the device.

Every section takes the :class:`~bench.cuda_plan.Context` and returns a JSON-able
dict; :mod:`bench.cuda` runs them in order, catches what they raise and writes
the report after each, so a run cut short still leaves what it measured.
The training timings are in :mod:`bench.cuda_training`, the inference ones in
:mod:`bench.cuda_inference`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.cuda_plan import Context, bf16_peak_tflops
from bench.data import loader_rates
from bench.models import preset_model_config
from bench.speed_machine import machine_info
from vipa.config import resolve_config
from vipa.data.build import build_dataset
from vipa.model import outputs
from vipa.training import train

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "timm", "transformers", "tokenizers", "onnxruntime",
            "numpy", "pillow")


# ---------------------------------------------------------------------------- machine


def machine(ctx: Context) -> dict[str, Any]:
    """Card, driver, torch / CUDA / cuDNN and package versions, and the measured bf16 ceiling."""
    info = machine_info([ctx.device])
    info["packages"] = {name: _version(name) for name in PACKAGES}
    info["torch_cuda"] = torch.version.cuda
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        info.update(card=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), driver=_driver_version(),
                    nccl=_nccl_version())
        info["bf16_peak_tflops_datasheet"] = bf16_peak_tflops(props.name)
    info["bf16_matmul_tflops_measured"] = round(matmul_tflops(ctx), 1)
    return info


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nccl_version() -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # a torch built without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def matmul_tflops(ctx: Context) -> float:
    """TFLOP/s of an n x n x n bf16 matrix product on random data (mean of 10 after 3)."""
    n = ctx.sizes.matmul_n
    a, b = (torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    ctx.sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    ctx.sync()
    return 2 * n**3 * 10 / (time.perf_counter() - start) / 1e12


# ---------------------------------------------------------------------------- tests


def tests(ctx: Context) -> dict[str, Any]:
    """tests/test_device.py with ``VIPA_TEST_DEVICES`` set to the device (collected only in a
    dry run: the suite runs it on the CPU anyway)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_device.py", *(["--collect-only"] if ctx.device.type == "cpu" else [])]
    env = {**os.environ, "VIPA_TEST_DEVICES": ctx.device.type}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=min(ctx.sizes.tests_timeout_s, max(ctx.remaining(), 10)))
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"command": " ".join(command[1:]), "returncode": done.returncode,
            "seconds": round(time.perf_counter() - start, 1),
            "summary": lines[-1] if lines else "",
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:20],
            "tail": lines[-40:] if done.returncode else []}


# ---------------------------------------------------------------------------- recipe


def recipe(ctx: Context) -> dict[str, Any]:
    """The ``cpu`` recipe for a fixed step count per precision: loss curve, val, samples/s."""
    runs = {}
    for amp in ctx.sizes.recipe_precisions:
        if amp == "off" or ctx.device.type == "cuda":  # autocast is CUDA-only in training
            runs[amp] = recipe_run(ctx, amp)
    return {"steps": ctx.sizes.recipe_steps, "device": str(ctx.device), "runs": runs}


def recipe_run(ctx: Context, amp: str) -> dict[str, Any]:
    """One ``train()`` of the cpu preset, step-limited, seed 0, as ``vipa train`` runs it."""
    output = ctx.scratch / f"recipe-{amp}"
    options = {**ctx.data_options(), "device": str(ctx.device),
               "max_steps": ctx.sizes.recipe_steps, "output": str(output), "seed": 0}
    cfg = resolve_config("cpu", options, ctx.overrides(
        *ctx.sizes.recipe_overrides, f"train.amp={amp}",
        f"train.log_every={min(10, ctx.sizes.recipe_steps)}", "train.checkpoint_every=0",
        "data.max_val_samples=100"))
    start = time.perf_counter()
    result = train(cfg, progress=False)
    seconds = time.perf_counter() - start
    records = [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    val = [r["val"] for r in records if "val" in r]
    return {"amp": amp, "wall_s": round(seconds, 1), "steps": result.step,
            "curve": [[r["step"], round(r["loss"], 5)] for r in steps],
            "samples_per_s": round(statistics.median(r["samples_per_s"] for r in steps), 1)
            if steps else None,
            "final_val_oIoU": round(val[-1]["oIoU"], 4) if val else None}


# ---------------------------------------------------------------------------- ONNX


def onnx(ctx: Context) -> dict[str, Any]:
    """Export the cpu recipe's model (CPU parity as ``vipa export`` checks it), then run the
    file on the device's onnxruntime provider against PyTorch on the device."""
    from bench.models import build
    from vipa.inference.export import VERIFY_PHRASES, example_inputs, export_model
    from vipa.inference.runtime import load_exported

    config = preset_model_config("cpu", list(ctx.sizes.model_overrides))
    model = build(config, torch.device("cpu"))
    model.encoder.tokenizer.fit(list(VERIFY_PHRASES) * 2)
    path = ctx.scratch / "model.onnx"
    start = time.perf_counter()
    exported = export_model(model, path)
    out = {"export_and_cpu_verify_s": round(time.perf_counter() - start, 1),
           "cpu_max_abs_diff": exported.max_abs_diff, "providers": _ort_providers()}
    if ctx.device.type != "cuda" or "CUDAExecutionProvider" not in out["providers"]:
        out["cuda"] = "not run: onnxruntime here has no CUDAExecutionProvider"
        return out
    images, ids, mask, index = example_inputs(model, VERIFY_PHRASES, seed=1)
    model.to(ctx.device).eval()
    with torch.inference_mode():
        want = model(images.to(ctx.device), ids.to(ctx.device), mask.to(ctx.device),
                     index.to(ctx.device))
    runtime = load_exported(path, device="cuda")
    got = runtime.run(images.numpy(), ids.numpy(), mask.numpy(), index.numpy())
    diffs = [float((torch.from_numpy(g) - w.float().cpu()).abs().max())
             for g, w in zip(got, outputs(want), strict=True)]
    out["cuda_max_abs_diff"] = max(diffs)
    out["cuda_session_providers"] = getattr(runtime, "providers", None)
    return out


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


# ---------------------------------------------------------------------------- DDP


def ddp(ctx: Context) -> dict[str, Any]:
    """``torchrun --nproc-per-node 1 -m vipa_cli train`` for 2 steps: NCCL on CUDA, gloo on CPU."""
    output = ctx.scratch / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "1", "-m", "vipa_cli", "-v", "train", "--config", "cpu",
               "--device", ctx.device.type, "--max-steps", "2", "--output", str(output),
               "--no-progress", *([f"--data-root={ctx.data_root}"] if ctx.data_root else []),
               *(arg for o in ctx.overrides(*ctx.sizes.recipe_overrides, "data.max_val_samples=8")
                 for arg in ("--set", o))]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NCCL_DEBUG": "WARN"},
                          timeout=min(ctx.sizes.ddp_timeout_s, max(ctx.remaining(), 10)))
    text = done.stdout + done.stderr
    backend = re.search(r"process group: backend (\w+)", text)
    lines = text.strip().splitlines()
    return {"command": "torchrun " + " ".join(command[3:]), "returncode": done.returncode,
            "seconds": round(time.perf_counter() - start, 1),
            "backend": backend.group(1) if backend else None,
            "ranks_agree": "ranks hold the same weights" in text,
            "errors": [x for x in lines if re.search(r"Error|error:|NCCL WARN|^Error", x)][:12],
            "tail": lines[-40:] if done.returncode else []}


# ---------------------------------------------------------------------------- data


def data(ctx: Context) -> dict[str, Any]:
    """Training DataLoader images/s at the paper preset's settings, per worker count
    (:func:`bench.data.loader_rates`)."""
    options = {**ctx.data_options(), "device": str(ctx.device)}
    cfg = resolve_config("paper", options, ctx.overrides())
    dataset = build_dataset(cfg, cfg.data.train_split, train=True)
    rows = loader_rates(dataset, list(ctx.sizes.loader_workers), ctx.sizes.loader_batches,
                        cfg.train.batch_size, pin_memory=ctx.device.type == "cuda")
    return {"dataset": f"{cfg.data.name} ({len(dataset)} training samples)",
            "image_size": cfg.model.image_size, "batch_size": cfg.train.batch_size,
            "preset_workers": cfg.data.num_workers, "rows": rows}
