"""The training sections of ``python -m bench.cuda``: the paper preset's step, today's and fast.

``paper_train`` times the training session as it runs by default (per step,
synced) and a ladder of batch sizes; ``fast_train`` times today's step beside
the fast path (phrases padded to ``max_text_len``, torch.compile) over many
steps with one sync at the end, as a training loop runs, with the training
MFU and the time of one epoch as LAVT counts it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from bench.cuda_inference import image_flops, peak_tflops
from bench.cuda_plan import Context
from bench.speed_machine import is_oom, one_line
from vipa.config import resolve_config
from vipa.training.distributed import DistInfo
from vipa.training.session import Session

# LAVT's epoch is one random sentence per referred object: RefCOCO (UNC) train has 42,404.
LAVT_EPOCH_SAMPLES = 42404
# A training step's FLOPs over its forward pass's: the backward pass costs about twice.
TRAIN_OVER_FORWARD = 3


def paper_train(ctx: Context) -> dict[str, Any]:
    """The paper preset (random weights) for N steps in bf16 at batch 8: step time, data wait,
    peak memory; then the largest batch that fits, from a ladder of batch sizes."""
    options = {**ctx.data_options(), "device": str(ctx.device),
               "max_steps": ctx.sizes.paper_steps, "output": str(ctx.scratch / "paper")}
    cfg = resolve_config("paper", options, ctx.overrides("train.amp=bf16",
                                                         "data.max_val_samples=8"))
    start = time.perf_counter()
    session = Session(cfg, DistInfo(), ctx.scratch / "paper", resume=False)
    setup_s = time.perf_counter() - start
    batches = session.batches(lambda: None)
    result = {"batch_size": cfg.train.batch_size, "image_size": cfg.model.image_size,
              "num_workers": cfg.data.num_workers, "amp": cfg.train.amp,
              "setup_s": round(setup_s, 1),
              "params_m": round(sum(p.numel() for p in session.model.parameters()) / 1e6, 1),
              **timed_steps(ctx, session, batches)}
    result["ladder"] = batch_ladder(ctx, session, next(batches)[0])
    fits = [row["batch"] for row in result["ladder"] if "step_ms" in row]
    result["largest_batch"] = max([cfg.train.batch_size, *fits])
    return result


def timed_steps(ctx: Context, session: Session, batches) -> dict[str, Any]:  # noqa: ANN001
    """Per step: seconds waiting for the loader, seconds of the step; after the warm-up."""
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    waits, steps = [], []
    for _ in range(ctx.sizes.paper_steps):
        start = time.perf_counter()
        group = next(batches)
        ready = time.perf_counter()
        session.step(group)
        ctx.sync()
        waits.append(ready - start)
        steps.append(time.perf_counter() - ready)
    warm = ctx.sizes.paper_warmup
    wait, step = sum(waits[warm:]), sum(steps[warm:])
    measured = len(steps) - warm
    out = {"steps": len(steps), "warmup_steps": warm,
           "first_step_s": round(waits[0] + steps[0], 2),
           "step_ms_median": round(1000 * statistics.median(steps[warm:]), 1),
           "step_ms_mean": round(1000 * step / measured, 1),
           "data_wait_ms_mean": round(1000 * wait / measured, 2),
           "data_wait_pct": round(100 * wait / (wait + step), 2),
           "images_per_s": round(session.cfg.train.batch_size * measured / (wait + step), 1)}
    if ctx.device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
    return out


def batch_ladder(ctx: Context, session: Session, batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Two steps per batch size (the loader's batch repeated); stop at the first OOM."""
    rows = []
    for size in ctx.sizes.batch_ladder:
        if ctx.remaining() < 60:
            rows.append({"batch": size, "skipped": "time budget"})
            break
        big = grown(batch, size)
        try:
            if ctx.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(ctx.device)
            session.step([big])
            ctx.sync()
            start = time.perf_counter()
            session.step([big])
            ctx.sync()
        except Exception as error:  # OOM ends the ladder; anything else is a finding too
            session.parts.optimizer.zero_grad(set_to_none=True)
            rows.append({"batch": size, "error": "out of memory" if is_oom(error)
                         else one_line(error)})
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            break
        ms = 1000 * (time.perf_counter() - start)
        row = {"batch": size, "step_ms": round(ms, 1), "images_per_s": round(size / ms * 1000, 1)}
        if ctx.device.type == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
        rows.append(row)
    return rows


def grown(batch: dict[str, Any], size: int) -> dict[str, Any]:
    """``batch`` repeated up to ``size`` samples (tensors and lists alike)."""
    have = len(batch["text"])
    index = [i % have for i in range(size)]
    return {key: value[index] if isinstance(value, torch.Tensor)
            else [value[i] for i in index] if isinstance(value, list) and len(value) == have
            else value for key, value in batch.items()}


def fast_train(ctx: Context) -> dict[str, Any]:
    """Today's training step beside the fast path, per batch size, in one run.

    Arms: ``eager`` (phrases padded per batch, as ``vipa train`` runs by default),
    ``static`` (``train.text_padding=max``), ``compiled`` (``--compile``) and, with
    inductor, ``graphs`` (``train.compile_mode=reduce-overhead``: CUDA graphs). Each is
    timed over ``fast_steps`` steps after ``fast_warmup`` (the compile), the loader
    included, with one device sync at the end (inside the loop a step waits only for
    the previous step's forward pass, the NaN check). Dynamo's caches are reset between
    arms, so an arm neither reuses nor pays for another's compiled graphs.
    """
    compiled = ("train.compile=true", f"train.compile_backend={ctx.sizes.compile_backend}")
    arms = {"eager": ("train.text_padding=longest",), "static": ("train.text_padding=max",),
            "compiled": compiled}
    if ctx.sizes.compile_backend == "inductor":  # CUDA graphs: inductor's mode
        arms["graphs"] = (*compiled, "train.compile_mode=reduce-overhead")
    rows, flops = [], None
    for batch in ctx.sizes.fast_batches:
        for arm, sets in arms.items():
            if ctx.remaining() < ctx.sizes.compile_min_s:
                rows.append({"arm": arm, "batch": batch, "skipped": "time budget"})
                continue
            session = _session(ctx, batch, sets)
            flops = flops or image_flops(session.model, session.cfg.model.image_size, ctx)
            rows.append({"arm": arm, "batch": batch, **_loop_rate(ctx, session)})
            del session
            torch._dynamo.reset()  # graphs, guards and CUDA-graph pools of this arm
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    peak = peak_tflops(ctx)
    for row in rows:
        if "images_per_s" in row:
            row["lavt_epoch_min"] = round(LAVT_EPOCH_SAMPLES / row["images_per_s"] / 60, 1)
            if peak and flops:
                achieved = TRAIN_OVER_FORWARD * flops * row["images_per_s"] / 1e12
                row["train_mfu_pct"] = round(100 * achieved / peak, 2)
    return {"forward_gflops_per_image": round((flops or 0) / 1e9, 1), "peak_tflops": peak,
            "rows": rows}


def _session(ctx: Context, batch: int, sets: tuple[str, ...]) -> Session:
    options = {**ctx.data_options(), "device": str(ctx.device), "batch_size": batch,
               "output": str(ctx.scratch / "fast")}
    cfg = resolve_config("paper", options, ctx.overrides("train.amp=bf16",
                                                         "data.max_val_samples=8", *sets))
    return Session(cfg, DistInfo(), ctx.scratch / "fast", resume=False)


def _loop_rate(ctx: Context, session: Session) -> dict[str, Any]:
    """Warm-up steps (their seconds: the compile), then steps timed with one sync."""
    batches = session.batches(lambda: None)
    try:
        start = time.perf_counter()
        for _ in range(ctx.sizes.fast_warmup):
            session.step(next(batches))
        ctx.sync()
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(ctx.sizes.fast_steps):
            session.step(next(batches))
        session.confirm_finite()
        ctx.sync()
    except Exception as error:  # OOM or a compile failure is this row's finding
        return {"error": "out of memory" if is_oom(error) else one_line(error)}
    seconds = time.perf_counter() - start
    size = session.cfg.train.batch_size
    return {"warmup_s": round(warm, 1), "step_ms": round(1000 * seconds / ctx.sizes.fast_steps, 1),
            "images_per_s": round(size * ctx.sizes.fast_steps / seconds, 1)}
