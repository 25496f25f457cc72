"""Speed and cost of what ``vipa predict`` runs, per preset and device: VIPA vs classic decoder.

For every preset (``vipa/config/presets``) and device, two models are built
from the preset's model config with random weights and the same encoder: VIPA
(``decoder.kv=visual``) and the classic decoder (``decoder.kv=language``).

What is timed: the call ``vipa predict`` makes for one image
(:func:`vipa.inference.predict.segment`), on a
:class:`vipa.inference.runtime.TorchRuntime` around each model:
``runtime.run(images, *runtime.tokenize(texts))``, i.e. tokenizing, numpy to
tensors, the forward pass under ``torch.inference_mode`` and the logits and
relevance back to numpy. The input is a synthetic uint8 image already at the
model's input size, put through :func:`vipa.inference.masks.preprocess` once
(outside the timer) and repeated ``batch`` times with one phrase each, as
``segment`` repeats an image per phrase; resizing the probabilities back to the
image is not timed, and the tokenizer's warning about a cut phrase (a
random-weight vocabulary splits it finely) is silenced while timing. On CUDA
the call runs under bf16 autocast, what a GPU deployment would use (``vipa
predict`` itself runs fp32); the CPU runs fp32.

How: every sample is one ``torch.utils.benchmark.Timer.timeit(number=1)`` (the
Timer synchronizes CUDA before it reads the clock, runs with this process's
torch threads, and makes two untimed calls right before the timed one).
Samples are taken round-robin, every model once per round, so a busy machine
slows both models alike and the VIPA / classic ratios stay fair; the two
untimed calls re-warm the caches the other model just used. Latency is the
median over rounds (``Measurement.merge(...).median``). Before the first round
every model gets the plan's warm-up calls, the first (compiling) one included.

Measured per model: latency at batch 1 and throughput at the best batch size
tried, peak memory of one call (:mod:`bench.memory`), parameters, GFLOPs and the
encoder / fusion / VEG / decoder time split (:mod:`bench.components`, forward
passes on tensors). Separately: the cold start of ``vipa predict`` as a whole
process (:mod:`bench.coldstart`). The markdown is written by :mod:`bench.report`.

On the CPU a model whose first batch-1 call takes more than 1 s (the ``paper``
preset: Swin-B + BERT-base at 480 px) gets a reduced plan (5 runs, batch 1
only, 3 component rounds) so the default run ends in minutes; ``--runs``,
``--warmup``, ``--batch-sizes`` and ``--component-runs`` override every plan.
The plan each row used is in the output.

    python -m bench.speed                                 # cpu,paper on cpu (+ cuda if present)
    python -m bench.speed --presets cpu --device cuda --compile --json speed.json
    python -m bench.speed --presets cpu,paper --threads 1 --json bench/results/speed-cpu.json \\
        --markdown bench/results/speed-cpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Measurement, Timer

from bench import components
from bench.coldstart import cold_start
from bench.memory import memory_method, peak_extra_mb, weights_mb
from bench.models import DECODERS, PHRASE, build, compiled_copy, model_input, preset_model_config
from bench.report import emit, markdown
from vipa.config import ModelConfig
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


# ---------------------------------------------------------------------------- machine


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


# ---------------------------------------------------------------------------- timing


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


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or "out of memory" in str(error).lower()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


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
            if _is_oom(error):
                return first_ms, True
            if variants[name].mode != "compiled":
                raise
            errors[name] = _one_line(error)
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
            if not _is_oom(error):
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


# ---------------------------------------------------------------------------- one preset


def make_variants(models: dict[str, torch.nn.Module], device: torch.device, compile_too: bool,
                  errors: dict[str, str]) -> dict[str, Variant]:
    """A runtime per model, plus one per ``torch.compile``d copy when asked."""
    variants = {f"{kv}/eager": Variant(kv, "eager", TorchRuntime(model, str(device)))
                for kv, model in models.items()}
    if compile_too:
        for kv, model in models.items():
            try:
                runtime = TorchRuntime(compiled_copy(model), str(device))
                variants[f"{kv}/compiled"] = Variant(kv, "compiled", runtime)
            except Exception as error:  # reported, not fatal
                errors[f"{kv}/compiled"] = _one_line(error)
    return variants


def model_entry(kv: str, model: torch.nn.Module, config: ModelConfig, ms: dict[str, float],
                flops: dict[str, int]) -> dict[str, Any]:
    """What one model is and costs: config, parameters, GFLOPs, time split; modes come later."""
    flops = {**flops, "total": flops["text"] + flops["fusion+vision"] + flops["veg"]
             + flops["decoder"]}
    return {
        "kv": kv,
        "encoder": config.encoder.name,
        "encoder_preset": config.encoder.preset,
        "fusion": config.fusion.name,
        "decoder_dim": config.decoder.dim,
        "veg_k": config.veg.k,
        "params": components.part_params(model),
        "weights_mb": round(weights_mb(model), 1),
        "gflops": {k: round(v / 1e9, 4) for k, v in components.split_parts(flops).items()},
        "component_ms": {k: round(v, 3) for k, v in ms.items()},
        "component_pct": {k: round(100 * ms[k] / (ms["total"] or 1.0), 1)
                          for k in components.PARTS},
        "modes": {},
    }


def mode_entry(name: str, batches: dict[str, list[dict[str, Any]]], first_ms: dict[str, float],
               errors: dict[str, str], stop_note: str | None) -> dict[str, Any]:
    """One variant's timings: latency, best throughput, peak memory and every batch row."""
    mode: dict[str, Any] = {"first_call_ms": round(first_ms.get(name, 0.0), 1)}
    if name in errors or not batches[name]:
        mode["error"] = errors.get(name, stop_note or "not measured")
        return mode
    rows = batches[name]
    best = max(rows, key=lambda row: row["samples_per_s"])
    mode.update({
        "latency_ms": rows[0]["median_ms"],
        "throughput": {"batch": best["batch"], "samples_per_s": best["samples_per_s"]},
        "peak_mb": rows[0]["peak_mb"],
        "batches": rows,
    })
    return mode


def bench_preset(preset: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Every number of one (preset, device): per decoder, per mode, plus the ratios."""
    configs = {kv: preset_model_config(preset, [*args.set, f"decoder.kv={kv}"])
               for kv in DECODERS}
    size = configs["visual"].image_size
    models = {kv: build(config, device) for kv, config in configs.items()}
    errors: dict[str, str] = {}
    variants = make_variants(models, device, args.compile, errors)
    with quiet_truncation():
        plan, batches, first_ms, stop_note = time_runtime(variants, device, args, errors)
    part_ms, part_flops = measure_components(models, size, device, plan)
    result: dict[str, Any] = {
        "preset": preset, "device": str(device), "precision": precision(device),
        "compile": bool(args.compile), "image_size": size, "phrase": PHRASE,
        "plan": asdict(plan), "memory_method": memory_method(device), "models": {},
    }
    if stop_note:
        result["note"] = stop_note
    for kv, model in models.items():
        entry = model_entry(kv, model, configs[kv], part_ms[kv], part_flops[kv])
        for name, variant in variants.items():
            if variant.kv == kv:
                entry["modes"][variant.mode] = mode_entry(name, batches, first_ms, errors,
                                                          stop_note)
        result["models"][kv] = entry
    for name, error in errors.items():  # a variant that failed before it existed
        kv, mode_name = name.split("/")
        result["models"][kv]["modes"].setdefault(mode_name, {"error": error})
    result["ratios"] = ratios(result["models"])
    _compile_speedups(result["models"])
    return result


def ratios(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """VIPA / classic decoder per mode: how much the visual expression costs."""
    visual, language = models["visual"], models["language"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 4) if a is not None and b else None

    out = {}
    for mode in visual["modes"]:
        v, c = visual["modes"][mode], language["modes"].get(mode, {})
        out[mode] = {
            "latency": ratio(v.get("latency_ms"), c.get("latency_ms")),
            "throughput": ratio(v.get("throughput", {}).get("samples_per_s"),
                                c.get("throughput", {}).get("samples_per_s")),
            "peak_mb": ratio(v.get("peak_mb"), c.get("peak_mb")),
            "params": ratio(visual["params"]["total"], language["params"]["total"]),
            "gflops": ratio(visual["gflops"]["total"], language["gflops"]["total"]),
        }
    return out


def _compile_speedups(models: dict[str, dict[str, Any]]) -> None:
    for entry in models.values():
        eager, compiled = entry["modes"].get("eager", {}), entry["modes"].get("compiled", {})
        if eager.get("latency_ms") and compiled.get("latency_ms"):
            compiled["latency_speedup_vs_eager"] = round(
                eager["latency_ms"] / compiled["latency_ms"], 3)


# ---------------------------------------------------------------------------- CLI


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("batch sizes are positive integers, e.g. 1,2,4")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``python -m bench.speed``."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="cpu,paper",
                        help="comma-separated presets (names or YAML files)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, auto or a comma list (default: cpu, plus cuda if present)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per batch size (default 10; 5 for a slow CPU model)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls before timing, the first included (default 3)")
    parser.add_argument("--batch-sizes", type=_int_list, default=None,
                        help="default 1,2,4,8,16 (batch 1 only for a slow CPU model)")
    parser.add_argument("--component-runs", type=int, default=None,
                        help="rounds of the per-component timing (default: --runs)")
    parser.add_argument("--compile", action="store_true",
                        help="also time a torch.compile'd copy of each model")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (also OMP_NUM_THREADS of the cold-start runs)")
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--cold-start-runs", type=int, default=3)
    parser.add_argument("--cold-start-preset", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override for every preset, e.g. decoder.dim=64")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown here")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole report: machine, every (preset, device), then the cold starts."""
    devices = resolve_devices(args.device)
    report: dict[str, Any] = {"machine": machine_info(devices), "results": [], "cold_start": []}
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        for device in devices:
            print(f"[speed] {preset} on {device} ...", file=sys.stderr, flush=True)
            report["results"].append(bench_preset(preset, device, args))
    if not args.skip_cold_start:
        for device in devices:
            print(f"[speed] cold start on {device} ...", file=sys.stderr, flush=True)
            report["cold_start"].append(cold_start(args.cold_start_preset, device,
                                                   args.cold_start_runs, args.set, args.threads))
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown table; write JSON / markdown when asked."""
    args = build_parser().parse_args(argv)
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run(args)
    finally:
        torch.set_num_threads(threads_before)
    emit(report, markdown, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
