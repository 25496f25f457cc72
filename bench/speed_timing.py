"""How ``python -m bench.speed`` times a model: round-robin Timer samples, per plan and batch.

The plan (how many runs, warm-up calls, batch sizes) is stored with each
result; :func:`median_latency_ms` and :func:`quiet_truncation` are shared with
the other timing benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.benchmark import Measurement, Timer

from bench import components
from bench.memory import peak_extra_mb, weights_mb
from bench.models import DECODERS, PHRASE, model_input
from bench.speed_machine import autocast, inference, is_oom, one_line
from vipa.inference.runtime import TorchRuntime

SLOW_FIRST_CALL_S = 1.0


@dataclass(frozen=True)
class Plan:
    """How much measuring one (preset, device) gets; stored with its results."""

    runs: int = 10
    warmup: int = 3  # calls before timing, the first (compiling) call included
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    component_runs: int = 10
    component_warmup: int = 1
    reason: str = "default"


# A slow model on the CPU: the first untimed call already warmed it up.
SLOW_CPU_PLAN = Plan(runs=5, warmup=1, batch_sizes=(1,), component_runs=3, component_warmup=0)


@dataclass
class Variant:
    """One model behind the runtime ``vipa predict`` uses: a decoder kind, eager or compiled."""

    kv: str
    mode: str
    runtime: TorchRuntime

    @property
    def model(self) -> torch.nn.Module:
        return self.runtime.model


@contextlib.contextmanager
def quiet_truncation() -> Iterator[None]:
    """Silence ``Runtime.tokenize``'s per-call warning about a cut phrase while timing.

    Random-weight tokenizers split the phrase into more pieces than a trained
    vocabulary would; the count is still made, only the log line is dropped, so
    no stderr write lands inside a timed call.
    """
    logger = logging.getLogger("vipa.inference.runtime")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def runtime_call(runtime: TorchRuntime, batch: int,
                 device: torch.device) -> Callable[[], object]:
    """What ``vipa predict`` runs for one image and ``batch`` phrases: tokenize, ``runtime.run``."""
    images = model_input(runtime.image_size, batch)
    texts = [PHRASE] * batch

    def call() -> object:
        with autocast(device):
            return runtime.run(images, *runtime.tokenize(texts))

    return call


def median_latency_ms(calls: dict[str, Callable[[], object]], warmup: int,
                      runs: int) -> dict[str, float]:
    """Median ms per call: ``warmup`` untimed rounds, then ``runs`` round-robin Timer samples."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    timers = {name: Timer("fn()", globals={"fn": fn}, label=name,
                          num_threads=torch.get_num_threads()) for name, fn in calls.items()}
    samples: dict[str, list[Measurement]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, timer in timers.items():
            samples[name].append(timer.timeit(number=1))
    return {name: Measurement.merge(ms)[0].median * 1000 for name, ms in samples.items()}


def resolve_plan(args: argparse.Namespace, device: torch.device, first_call_s: float) -> Plan:
    """The default plan, reduced for a slow model on the CPU, then what the user gave."""
    plan = Plan()
    if device.type == "cpu" and first_call_s > SLOW_FIRST_CALL_S:
        plan = replace(SLOW_CPU_PLAN, reason=(
            f"first batch-1 predict took {first_call_s:.1f} s > {SLOW_FIRST_CALL_S:g} s on the "
            "CPU: fewer runs, batch 1 only, fewer component rounds"))
    given: dict[str, Any] = {}
    options = []
    if args.runs is not None:
        given.update(runs=args.runs, component_runs=args.runs)
        options.append(f"--runs {args.runs}")
    if args.warmup is not None:
        given.update(warmup=max(args.warmup, 1), component_warmup=max(args.warmup - 1, 0))
        options.append(f"--warmup {args.warmup}")
    if args.batch_sizes is not None:
        given["batch_sizes"] = tuple(sorted({1, *args.batch_sizes}))  # latency needs batch 1
        options.append("--batch-sizes " + ",".join(map(str, args.batch_sizes)))
    if args.component_runs is not None:
        given["component_runs"] = args.component_runs
        options.append(f"--component-runs {args.component_runs}")
    if given:
        reason = "" if plan.reason == "default" else plan.reason + "; "
        plan = replace(plan, **given, reason=reason + "given: " + " ".join(options))
    return plan


def first_calls(calls: dict[str, Callable[[], object]], variants: dict[str, Variant],
                device: torch.device, errors: dict[str, str]) -> tuple[dict[str, float], bool]:
    """One untimed call each (it compiles, fills caches): its ms, and whether memory ran out.

    A compiled variant that fails is dropped from ``calls`` and reported in
    ``errors``; an eager one that fails raises.
    """
    first_ms: dict[str, float] = {}
    for name, fn in list(calls.items()):
        try:
            components.sync(device)
            start = time.perf_counter()
            fn()
            components.sync(device)
        except Exception as error:  # compile failure or OOM
            if is_oom(error):
                return first_ms, True
            if variants[name].mode != "compiled":
                raise
            errors[name] = one_line(error)
            del calls[name]
            continue
        first_ms[name] = (time.perf_counter() - start) * 1000
    return first_ms, False


def batch_rows(calls: dict[str, Callable[[], object]], variants: dict[str, Variant],
               device: torch.device, plan: Plan, batch: int) -> dict[str, dict[str, Any]]:
    """Latency, throughput and peak memory of every call at one batch size."""
    ms = median_latency_ms(calls, plan.warmup - 1, plan.runs)
    extra = {name: peak_extra_mb(fn, device) for name, fn in calls.items()}
    return {name: {
        "batch": batch,
        "median_ms": round(ms[name], 3),
        "samples_per_s": round(batch * 1000 / ms[name], 3),
        "peak_extra_mb": round(extra[name], 1),
        "peak_mb": round(weights_mb(variants[name].model) + extra[name], 1),
    } for name in calls}


def time_runtime(variants: dict[str, Variant], device: torch.device, args: argparse.Namespace,
                 errors: dict[str, str],
                 ) -> tuple[Plan, dict[str, list[dict[str, Any]]], dict[str, float], str | None]:
    """Time every variant's runtime call per batch size, round-robin; then its peak memory.

    The first call per batch size is untimed (it compiles, and fills caches);
    at batch 1 its duration decides the plan. A compile failure drops that
    variant (reported in ``errors``); running out of memory ends the batch sweep.
    """
    batches: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    first_ms: dict[str, float] = {}
    plan: Plan | None = None
    stop_note = None
    for batch in [1, *(b for b in (args.batch_sizes or Plan().batch_sizes) if b != 1)]:
        if plan is not None and batch not in plan.batch_sizes:
            continue
        calls = {name: runtime_call(v.runtime, batch, device)
                 for name, v in variants.items() if name not in errors}
        ms, oom = first_calls(calls, variants, device, errors)
        first_ms = ms if batch == 1 else first_ms
        if not oom and plan is None:
            eager_first = max(first_ms[f"{kv}/eager"] for kv in DECODERS) / 1000
            plan = resolve_plan(args, device, eager_first)
        try:
            rows = {} if oom else batch_rows(calls, variants, device, plan, batch)
        except Exception as error:  # OOM is reported, anything else raised
            if not is_oom(error):
                raise
            oom = True
        if oom:
            stop_note = f"batch {batch}: out of memory; larger batches not tried"
            torch.cuda.empty_cache()
            break
        for name, row in rows.items():
            batches[name].append(row)
    if plan is None:
        raise RuntimeError(f"{stop_note}: nothing measured")
    return plan, batches, first_ms, stop_note


def measure_components(models: dict[str, torch.nn.Module], size: int, device: torch.device,
                       plan: Plan) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Per-part ms (every part of both models round-robin) and per-part FLOPs of each model."""
    images = torch.from_numpy(model_input(size, 1)).to(device)
    parts: dict[str, dict[str, Callable[[], object]]] = {}
    calls: dict[str, Callable[[], object]] = {}
    with inference(device):
        for kv, model in models.items():
            ids, mask = model.tokenize([PHRASE])
            parts[kv] = components.component_calls(model, images, ids.to(device), mask.to(device))
            calls.update({f"{kv}:{part}": fn for part, fn in parts[kv].items()})
        part_ms = components.median_ms(calls, device, plan.component_warmup,
                                       plan.component_runs)
        flops = {kv: {part: components.count_flops(fn) for part, fn in own.items()
                      if part != "total"} for kv, own in parts.items()}
    ms = {kv: components.split_parts({part: part_ms[f"{kv}:{part}"] for part in own})
          for kv, own in parts.items()}
    return ms, flops
