"""The inference section of ``python -m bench.cuda``: images/s, model-FLOPs utilisation, profile.

The paper preset's model (random weights) with the VIPA decoder and the classic
decoder, forward passes on device tensors: eager fp32, eager bf16 autocast, bf16
weights (NCHW and channels-last) and a ``torch.compile``d copy in bf16, per batch
size, timed round-robin; the VIPA model again with Swin's window attention through
``scaled_dot_product_attention`` (``encoder.options.attention=sdpa``) beside timm's
at the best batches
(:func:`bench.components.median_ms`, which synchronizes the device). MFU is
the FLOPs of one image (torch's FLOP counter: matrix products and
convolutions) times images/s over the card's dense bf16 peak. Where the time
goes: a ``torch.profiler`` summary of the eager bf16 VIPA model at its best
batch (top kernels by device time, and how busy the device was) and the
encoder / fusion / VEG / decoder split; the same summary of its compiled twin.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from bench import components
from bench.cuda_plan import Context
from bench.models import DECODERS, PHRASE, build, compiled_copy, preset_model_config
from bench.speed_machine import is_oom, one_line

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# CUPTI records these beside the kernels; they are no kernel time (a full launch queue).
CUPTI_MARKERS = frozenset({"Command Buffer Full"})


def inference(ctx: Context) -> dict[str, Any]:
    """Eager rows of both decoders, the best batches, the ratios and the profile."""
    models, size = paper_models(ctx)
    flops = {kv: image_flops(model, size, ctx) for kv, model in models.items()}
    rows: list[dict[str, Any]] = []
    for precision in DTYPES:
        rows += eager_sweep(ctx, models, size, precision)
    best = {kv: max((r for r in rows if r["kv"] == kv and r["mode"] == "eager bf16"),
                    key=lambda r: r["images_per_s"])["batch"] for kv in models}
    rows += bf16_weight_rows(ctx, models, size, sorted({1, *best.values()}))
    attention = attention_rows(ctx, sorted({1, best["visual"]}))
    out = {"image_size": size, "flops_per_image": flops,
           "gflops_per_image": {kv: round(f / 1e9, 1) for kv, f in flops.items()},
           "peak_tflops": peak_tflops(ctx), "best_batch": best}
    return {**out, "rows": with_mfu(rows + attention, out), "ratios": ratios(rows),
            "sdpa_over_timm": attention_ratios(attention),
            "profile": profile(ctx, models["visual"], size, best["visual"])}


def compiled(ctx: Context) -> dict[str, Any]:
    """``torch.compile`` (bf16) of both decoders at the eager best batch, then at batch 1."""
    eager = ctx.results.get("inference", {})
    if "best_batch" not in eager:
        return {"skipped": "needs the inference section's best batch"}
    models, size = paper_models(ctx)
    batches = sorted({1, *eager["best_batch"].values()}, reverse=True)
    twins = {kv: compiled_copy(model, ctx.sizes.compile_backend) for kv, model in models.items()}
    rows = compiled_rows(ctx, twins, models, size, batches)
    out = {"batches": batches, "rows": with_mfu(rows, eager), "ratios": ratios(rows)}
    best = eager["best_batch"]["visual"]
    if any(r["kv"] == "visual" and r["batch"] == best and "ms" in r for r in rows):
        out["profile"] = profile(ctx, twins["visual"], size, best, parts=False)
    return out


def paper_models(ctx: Context) -> tuple[dict[str, torch.nn.Module], int]:
    """The paper preset's model with each decoder (random weights, seeded alike)."""
    configs = {kv: preset_model_config("paper", ctx.overrides(f"decoder.kv={kv}"))
               for kv in DECODERS}
    models = {kv: build(config, ctx.device) for kv, config in configs.items()}
    return models, configs["visual"].image_size


def with_mfu(rows: list[dict[str, Any]], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Each row's achieved TFLOP/s and, for bf16 rows, its share of the bf16 peak."""
    for row in rows:
        if not row.get("images_per_s"):
            continue
        row["tflops"] = round(info["flops_per_image"][row["kv"]] * row["images_per_s"] / 1e12, 2)
        if info["peak_tflops"] and "bf16" in row["mode"]:
            row["mfu_pct"] = round(100 * row["tflops"] / info["peak_tflops"], 2)
    return rows


def peak_tflops(ctx: Context) -> float | None:
    """The card's datasheet bf16 peak (else the measured matmul ceiling) from ``machine``."""
    machine = ctx.results.get("machine", {})
    return machine.get("bf16_peak_tflops_datasheet") or machine.get("bf16_matmul_tflops_measured")


def model_inputs(model: torch.nn.Module, size: int, batch: int,
                 device: torch.device) -> tuple[torch.Tensor, ...]:
    """Random images at the model's size and the benchmark phrase, ``batch`` times."""
    ids, mask = model.tokenize([PHRASE] * batch)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    return images.to(device), ids.to(device), mask.to(device)


def forward_call(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                 dtype: torch.dtype | None, device: torch.device) -> Callable[[], object]:
    """One forward pass under ``inference_mode``, in ``dtype`` autocast when one is given."""
    def call() -> object:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return model(*inputs)
    return call


def image_flops(model: torch.nn.Module, size: int, ctx: Context) -> int:
    """FLOPs of one image's forward pass (batch 1)."""
    inputs = model_inputs(model, size, 1, ctx.device)
    return components.count_flops(forward_call(model, inputs, None, ctx.device))


def eager_sweep(ctx: Context, models: dict[str, torch.nn.Module], size: int,
                precision: str) -> list[dict[str, Any]]:
    """Both decoders per batch size, round-robin, until a batch runs out of memory."""
    rows = []
    for batch in ctx.sizes.infer_batches:
        calls = {kv: forward_call(model, model_inputs(model, size, batch, ctx.device),
                                  DTYPES[precision], ctx.device) for kv, model in models.items()}
        try:
            ms = components.median_ms(calls, ctx.device, 2, ctx.sizes.infer_runs)
        except Exception as error:
            if not is_oom(error):
                raise
            torch.cuda.empty_cache()
            break
        rows += [_row(kv, f"eager {precision}", batch, ms[kv]) for kv in models]
    return rows


def bf16_weight_rows(ctx: Context, models: dict[str, torch.nn.Module], size: int,
                     batches: list[int]) -> list[dict[str, Any]]:
    """Both decoders with their weights in bf16 (no autocast: no per-call weight casts, norms
    and element-wise work in bf16 too), in NCHW and in channels-last memory (``vipa predict
    --precision bf16 --channels-last``), round-robin per batch."""
    layouts = {"bf16 weights": torch.contiguous_format,
               "bf16 weights channels_last": torch.channels_last}
    cast = {(kv, mode): copy.deepcopy(model).to(torch.bfloat16, memory_format=layout)
            for kv, model in models.items() for mode, layout in layouts.items()}
    rows = []
    for batch in batches:
        calls = {}
        for (kv, mode), model in cast.items():
            images, ids, mask = model_inputs(model, size, batch, ctx.device)
            images = images.to(torch.bfloat16).contiguous(memory_format=layouts[mode])
            calls[(kv, mode)] = forward_call(model, (images, ids, mask), None, ctx.device)
        try:
            ms = components.median_ms(calls, ctx.device, 2, ctx.sizes.infer_runs)
        except Exception as error:  # a model that fails in bf16 is a finding
            return rows + [{"kv": kv, "mode": mode, "batch": batch, "error": one_line(error)}
                           for kv, mode in cast]
        rows += [_row(kv, mode, batch, ms[(kv, mode)]) for kv, mode in cast]
    return rows


def attention_rows(ctx: Context, batches: list[int]) -> list[dict[str, Any]]:
    """The paper's VIPA model in eager bf16 with timm's window attention and with ``sdpa``
    (the same weights), round-robin per batch; rows ``eager bf16 timm-attention`` / ``...
    sdpa-attention`` (the dry run: Swin micro at 64 px)."""
    configs = [preset_model_config("paper", ["encoder.weights=random", *ctx.sizes.swin_overrides,
                                             "decoder.kv=visual",
                                             f"encoder.options.attention={name}"])
               for name in ("timm", "sdpa")]
    model, twin = (build(config, ctx.device) for config in configs)
    twin.load_state_dict(model.state_dict())
    size = configs[0].image_size
    rows = []
    for batch in batches:
        inputs = model_inputs(model, size, batch, ctx.device)
        calls = {name: forward_call(m, inputs, torch.bfloat16, ctx.device)
                 for name, m in (("timm-attention", model), ("sdpa-attention", twin))}
        try:
            ms = components.median_ms(calls, ctx.device, 2, ctx.sizes.infer_runs)
        except Exception as error:  # a failing fast path is a finding, not the end
            return rows + [{"kv": "visual", "mode": "eager bf16 sdpa-attention",
                            "batch": batch, "error": one_line(error)}]
        rows += [_row("visual", f"eager bf16 {name}", batch, ms[name]) for name in calls]
    return rows


def attention_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """sdpa / timm window attention images/s per batch (:func:`attention_rows`)."""
    rate = {(r["mode"], r["batch"]): r.get("images_per_s") for r in rows}
    return [{"batch": batch, "sdpa_over_timm": round(rate[("eager bf16 sdpa-attention",
                                                           batch)] / timm, 3)}
            for (mode, batch), timm in rate.items()
            if mode == "eager bf16 timm-attention" and timm
            and rate.get(("eager bf16 sdpa-attention", batch))]


def compiled_rows(ctx: Context, twins: dict[str, torch.nn.Module],
                  models: dict[str, torch.nn.Module], size: int,
                  batches: list[int]) -> list[dict[str, Any]]:
    """Each model's compiled twin in bf16 per batch, both before the next batch; the first
    call's seconds (compiling) are kept. A compile is not started with less than
    ``compile_min_s`` left."""
    failed: set[str] = set()
    rows = []
    for batch in batches:
        for kv, twin in twins.items():
            row = {"kv": kv, "mode": "compiled bf16", "batch": batch}
            if kv in failed or ctx.remaining() < ctx.sizes.compile_min_s:
                rows.append({**row, "skipped": "compile failed" if kv in failed
                             else "time budget"})
                continue
            call = forward_call(twin, model_inputs(models[kv], size, batch, ctx.device),
                                torch.bfloat16, ctx.device)
            try:
                start = time.perf_counter()
                call()
                ctx.sync()
                compile_s = time.perf_counter() - start
                ms = components.median_ms({kv: call}, ctx.device, 2, ctx.sizes.infer_runs)[kv]
            except Exception as error:  # a compile failure is a finding, not the end
                failed.add(kv)
                rows.append({**row, "error": one_line(error)})
                continue
            rows.append({**_row(kv, "compiled bf16", batch, ms),
                         "first_call_s": round(compile_s, 1)})
    return rows


def _row(kv: str, mode: str, batch: int, ms: float) -> dict[str, Any]:
    return {"kv": kv, "mode": mode, "batch": batch, "ms": round(ms, 3),
            "images_per_s": round(batch * 1000 / ms, 1)}


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """VIPA / classic images/s per (mode, batch) both decoders ran."""
    rate = {(r["kv"], r["mode"], r["batch"]): r.get("images_per_s") for r in rows}
    return [{"mode": mode, "batch": batch,
             "vipa_over_classic": round(rate[("visual", mode, batch)] / classic, 3)}
            for (kv, mode, batch), classic in rate.items()
            if kv == "language" and classic and rate.get(("visual", mode, batch))]


def profile(ctx: Context, model: torch.nn.Module, size: int, batch: int,
            parts: bool = True) -> dict[str, Any]:
    """Where one bf16 forward's time goes (the eager model's, or a compiled twin's, whose
    kernels are inductor's): top ops by device time, busy share, and with ``parts`` the
    encoder / fusion / VEG / decoder split (eager modules only)."""
    inputs = model_inputs(model, size, batch, ctx.device)
    call = forward_call(model, inputs, torch.bfloat16, ctx.device)
    call()
    ctx.sync()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if ctx.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    steps = ctx.sizes.profile_steps
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            call()
        ctx.sync()
        wall_ms = (time.perf_counter() - start) * 1000 / steps
    out = {"batch": batch, "wall_ms": round(wall_ms, 2), **top_ops(prof, ctx, steps, wall_ms)}
    if parts:
        with contextlib.suppress(Exception):  # extra detail; the profile stands alone
            out["parts_ms"] = part_split(ctx, model, inputs)
    return out


def top_ops(prof: torch.profiler.profile, ctx: Context, steps: int,
            wall_ms: float) -> dict[str, Any]:
    """The 15 ops with the most self device time (CPU time on the CPU) per forward pass."""
    field = "self_device_time_total" if ctx.device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, field, 0) > 0]
    if ctx.device.type == "cuda":  # the kernels alone: an op's device time is its kernels'
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                  and not e.key.startswith("aten::") and e.key not in CUPTI_MARKERS]
    total_us = sum(getattr(e, field) for e in events)
    ranked = sorted(events, key=lambda e: getattr(e, field), reverse=True)[:15]
    return {"device_busy_pct": round(100 * total_us / 1000 / steps / wall_ms, 1),
            "ops_per_forward": round(sum(e.count for e in events) / steps),
            "top": [{"name": e.key[:90], "ms": round(getattr(e, field) / 1000 / steps, 3),
                     "pct": round(100 * getattr(e, field) / total_us, 1),
                     "calls": e.count // steps} for e in ranked]}


def part_split(ctx: Context, model: torch.nn.Module,
               inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Encoder / fusion / VEG / decoder ms of one bf16 forward pass (bench.components)."""
    with torch.inference_mode(), torch.autocast(ctx.device.type, dtype=torch.bfloat16):
        calls = components.component_calls(model, *inputs)
        ms = components.median_ms(calls, ctx.device, 1, ctx.sizes.infer_runs)
    return {part: round(value, 2) for part, value in components.split_parts(ms).items()}
