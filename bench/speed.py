"""Speed and cost of ``predict`` for each preset and device, VIPA against the classic decoder.

For every preset (``vipa/presets``) and device, two models are built from the
preset's model config with random weights and the same encoder: VIPA
(``decoder.kv=visual``) and the classic decoder (``decoder.kv=language``). Both
are timed round-robin (every model once per round, median over rounds), so a
busy machine slows both alike and the VIPA / classic ratios stay fair.

Measured per model: latency of ``model.predict`` at batch 1 and throughput at
the best batch size tried (a synthetic image already at the model's input size
plus one phrase; ``torch.inference_mode``; CUDA: bf16 autocast), peak memory,
parameters, GFLOPs and the encoder / fusion / VEG / decoder time split
(``bench/components.py``). Separately: the cold start of ``vipa predict`` as a
whole process (Python start, imports, checkpoint load, one prediction).

On the CPU a model whose first batch-1 ``predict`` takes more than 1 s (the
``paper`` preset: Swin-B + BERT-base at 480 px) gets a reduced plan (5 runs,
batch 1 only, 3 component rounds) so the default run ends in minutes;
``--runs``, ``--warmup``, ``--batch-sizes`` and ``--component-runs`` override
every plan. The plan each row used is in the output.

    python bench/speed.py                                 # cpu,paper on cpu (+ cuda if present)
    python bench/speed.py --presets cpu --device cuda --compile --json speed.json
    python bench/speed.py --presets cpu,paper --threads 1 --json bench/results/speed-cpu.json \\
        --markdown bench/results/speed-cpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime
import gc
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from vipa.config import ModelConfig, apply_overrides
from vipa.engine.config import load_preset
from vipa.model import build_model


def _load_components() -> ModuleType:
    """``bench/components.py`` by path: ``bench`` is a folder of scripts, not a package."""
    path = Path(__file__).resolve().with_name("components.py")
    name = "vipa_bench_components"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


components = _load_components()

PHRASE = "the red circle on the left"
DECODERS = {"visual": "VIPA (kv=visual)", "language": "classic (kv=language)"}
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
    """One model to time: a decoder kind in eager or ``torch.compile`` mode."""

    kv: str
    mode: str
    model: torch.nn.Module


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


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """``torch.inference_mode`` plus, on CUDA, bf16 autocast."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


# ---------------------------------------------------------------------------- memory


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
        return ("torch.cuda.max_memory_allocated during one predict call minus the memory "
                "allocated before it, plus the model's weights")
    if _can_reset_hwm():
        return ("peak RSS during one predict call (VmHWM, reset through /proc/self/clear_refs) "
                "minus RSS before it (after gc and malloc_trim), plus the model's weights")
    return ("growth of resource.getrusage ru_maxrss over one predict call, plus the model's "
            "weights (a lower bound: only growth above earlier peaks is seen)")


def peak_extra_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Extra memory one call needs above what is allocated before it, in MiB."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
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


def weights_mb(model: torch.nn.Module) -> float:
    """Bytes of parameters and buffers, in MiB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


# ---------------------------------------------------------------------------- models


def preset_model_config(preset: str, overrides: list[str]) -> ModelConfig:
    """The preset's model config with random weights (nothing downloaded), then ``overrides``."""
    config = load_preset(preset).model
    return apply_overrides(config, ["encoder.weights=random", *overrides])


def build(config: ModelConfig, device: torch.device) -> torch.nn.Module:
    """Seeded, so VIPA and the classic decoder get the same encoder weights."""
    torch.manual_seed(0)
    return build_model(config).to(device).eval()


def compiled_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose ``forward`` is ``torch.compile``d, so ``predict`` runs the compiled graph."""
    twin = copy.deepcopy(model)
    twin.forward = torch.compile(twin.forward)
    return twin


def synthetic_images(size: int, batch: int, device: torch.device) -> torch.Tensor:
    """A fixed random image repeated ``batch`` times, already at the model's input size."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=generator)
    return image.repeat(batch, 1, 1, 1).to(device)


def predict_call(model: torch.nn.Module, size: int, batch: int,
                 device: torch.device) -> Callable[[], object]:
    """``model.predict`` on ``batch`` copies of the image and phrase (tokenizing included)."""
    images = synthetic_images(size, batch, device)
    texts = [PHRASE] * batch
    return lambda: model.predict(images, texts)


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or "out of memory" in str(error).lower()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------- one preset


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


def time_predict(variants: dict[str, Variant], size: int, device: torch.device,
                 args: argparse.Namespace, errors: dict[str, str],
                 ) -> tuple[Plan, dict[str, list[dict[str, Any]]], dict[str, float], str | None]:
    """Time ``predict`` of every variant per batch size, round-robin; then its peak memory.

    The first call per batch size is untimed (it compiles, and fills caches);
    at batch 1 its duration decides the plan. A compile failure drops that
    variant (reported in ``errors``); running out of memory ends the batch sweep.
    """
    batches: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    first_ms: dict[str, float] = {}
    plan: Plan | None = None
    stop_note = None
    sizes = [1, *(b for b in (args.batch_sizes or Plan().batch_sizes) if b != 1)]
    for batch in sizes:
        if plan is not None and batch not in plan.batch_sizes:
            continue
        calls = {name: predict_call(v.model, size, batch, device)
                 for name, v in variants.items() if name not in errors}
        oom = False
        for name, fn in list(calls.items()):
            try:
                components.sync(device)
                start = time.perf_counter()
                fn()
                components.sync(device)
            except Exception as error:  # compile failure or OOM
                if _is_oom(error):
                    oom = True
                    break
                if variants[name].mode != "compiled":
                    raise
                errors[name] = _one_line(error)
                del calls[name]
                continue
            if batch == 1:
                first_ms[name] = (time.perf_counter() - start) * 1000
        if oom:
            stop_note = f"batch {batch}: out of memory; larger batches not tried"
            torch.cuda.empty_cache()
            break
        if plan is None:
            eager_first = max(first_ms[f"{kv}/eager"] for kv in DECODERS) / 1000
            plan = resolve_plan(args, device, eager_first)
        try:
            ms = components.median_ms(calls, device, plan.warmup - 1, plan.runs)
            extra = {name: peak_extra_mb(fn, device) for name, fn in calls.items()}
        except Exception as error:  # OOM is reported, anything else raised
            if not _is_oom(error):
                raise
            stop_note = f"batch {batch}: out of memory; larger batches not tried"
            torch.cuda.empty_cache()
            break
        for name in calls:
            batches[name].append({
                "batch": batch,
                "median_ms": round(ms[name], 3),
                "samples_per_s": round(batch * 1000 / ms[name], 3),
                "peak_extra_mb": round(extra[name], 1),
                "peak_mb": round(weights_mb(variants[name].model) + extra[name], 1),
            })

    if plan is None:
        raise RuntimeError(f"{stop_note}: nothing measured")
    return plan, batches, first_ms, stop_note


def bench_preset(preset: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Every number of one (preset, device): per decoder, per mode, plus the ratios."""
    configs = {kv: preset_model_config(preset, [*args.set, f"decoder.kv={kv}"])
               for kv in DECODERS}
    size = configs["visual"].image_size
    models = {kv: build(config, device) for kv, config in configs.items()}
    variants = {f"{kv}/eager": Variant(kv, "eager", model) for kv, model in models.items()}
    errors: dict[str, str] = {}
    if args.compile:
        for kv, model in models.items():
            try:
                variants[f"{kv}/compiled"] = Variant(kv, "compiled", compiled_copy(model))
            except Exception as error:  # reported, not fatal
                errors[f"{kv}/compiled"] = _one_line(error)

    with inference(device):
        plan, batches, first_ms, stop_note = time_predict(variants, size, device, args, errors)
        parts = {}
        calls = {}
        for kv, model in models.items():
            ids, mask = model.tokenize([PHRASE])
            own = components.component_calls(model, synthetic_images(size, 1, device),
                                              ids.to(device), mask.to(device))
            parts[kv] = own
            calls.update({f"{kv}:{part}": fn for part, fn in own.items()})
        part_ms = components.median_ms(calls, device, plan.component_warmup,
                                       plan.component_runs)
        part_flops = {kv: {part: components.count_flops(fn) for part, fn in own.items()
                           if part != "total"} for kv, own in parts.items()}

    result: dict[str, Any] = {
        "preset": preset,
        "device": str(device),
        "precision": precision(device),
        "compile": bool(args.compile),
        "image_size": size,
        "phrase": PHRASE,
        "plan": asdict(plan),
        "memory_method": memory_method(device),
        "models": {},
    }
    if stop_note:
        result["note"] = stop_note
    for kv, model in models.items():
        config = configs[kv]
        flops = part_flops[kv]
        flops["total"] = flops["text"] + flops["fusion+vision"] + flops["veg"] + flops["decoder"]
        ms = components.split_parts({part: part_ms[f"{kv}:{part}"] for part in parts[kv]})
        entry: dict[str, Any] = {
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
        for name, variant in variants.items():
            if variant.kv != kv:
                continue
            mode: dict[str, Any] = {"first_call_ms": round(first_ms.get(name, 0.0), 1)}
            if name in errors or not batches[name]:
                mode["error"] = errors.get(name, stop_note or "not measured")
            else:
                rows = batches[name]
                best = max(rows, key=lambda row: row["samples_per_s"])
                mode.update({
                    "latency_ms": rows[0]["median_ms"],
                    "throughput": {"batch": best["batch"], "samples_per_s": best["samples_per_s"]},
                    "peak_mb": rows[0]["peak_mb"],
                    "batches": rows,
                })
            entry["modes"][variant.mode] = mode
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


# ---------------------------------------------------------------------------- cold start


def vipa_command() -> list[str]:
    """The ``vipa`` console script beside this interpreter, else ``python -m vipa_cli``."""
    script = shutil.which("vipa", path=str(Path(sys.executable).parent)) or shutil.which("vipa")
    return [script] if script else [sys.executable, "-m", "vipa_cli"]


def _test_image(path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (90, 110, 90))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 70, 120, 150), fill=(220, 30, 30))
    draw.rectangle((190, 60, 280, 170), fill=(40, 60, 210))
    image.save(path)


def cold_start(preset: str, device: torch.device, runs: int, overrides: list[str],
               threads: int | None) -> dict[str, Any]:
    """Wall time of ``vipa predict`` as a fresh process, and of its imports alone.

    The checkpoint is written with :func:`vipa.checkpoint.save_checkpoint`, as
    training writes it; both commands run round-robin, ``runs`` times each.
    """
    from vipa.checkpoint import save_checkpoint

    env = os.environ.copy()
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="vipa-speed-") as tmp:
        folder = Path(tmp)
        model = build(preset_model_config(preset, overrides), torch.device("cpu"))
        checkpoint = save_checkpoint(folder / "model.safetensors", model)
        del model
        image = folder / "image.png"
        _test_image(image)
        predict = [*vipa_command(), "predict", str(image), "the red circle", "--checkpoint",
                   str(checkpoint), "--out", str(folder / "out"), "--device", device.type]
        imports = [sys.executable, "-c", "import torch, vipa.engine.predict, vipa.model"]
        times: dict[str, list[float]] = {"predict": [], "imports": []}
        for _ in range(runs):
            for name, command in (("imports", imports), ("predict", predict)):
                start = time.perf_counter()
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                elapsed = time.perf_counter() - start
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                    return {"preset": preset, "device": str(device), "command": predict,
                            "error": f"{name} exited {done.returncode}: {' '.join(tail)}"}
                times[name].append(elapsed)
        written = sorted(p.name for p in (folder / "out").glob("*.png"))
        size_mb = checkpoint.stat().st_size / 2**20
    return {
        "preset": preset,
        "device": str(device),
        "runs": runs,
        "command": ["vipa", *predict[len(vipa_command()):]],
        "checkpoint_mb": round(size_mb, 1),
        "median_s": round(statistics.median(times["predict"]), 3),
        "times_s": [round(t, 3) for t in times["predict"]],
        "imports_median_s": round(statistics.median(times["imports"]), 3),
        "outputs": written,
    }


# ---------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a machine line, one table, the plans, the cold start."""
    machine = report["machine"]
    lines = [
        f"Machine: {machine['cpu']} ({machine['cpu_count']} CPU cores, torch threads "
        f"{machine['torch_threads']}); torch {machine['torch']}, Python {machine['python']}; "
        f"{machine['date']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average'] or [])}, at the end "
        f"{', '.join(f'{x:.2f}' for x in machine.get('load_average_end') or [])} "
        "(1, 5, 15 min).",
        "",
        "| preset | device | mode | decoder | params (M) | GFLOPs | latency ms (batch 1) "
        "| throughput /s (best batch) | peak MB (batch 1) "
        "| eager time split % enc / fusion / VEG / dec |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    notes = []
    for row in report["results"]:
        where = f"{row['device']} {row['precision']}"
        for mode in row["ratios"]:
            first = True
            for kv, entry in row["models"].items():
                data = entry["modes"].get(mode, {})
                pct = entry["component_pct"]
                split = " / ".join(f"{pct[p]:.1f}" for p in ("encoder", "fusion", "veg",
                                                              "decoder"))
                if "error" in data or not data:
                    timing = [f"failed: {data.get('error', 'not measured')[:80]}", "", ""]
                else:
                    tp = data["throughput"]
                    timing = [_fmt(data["latency_ms"], 1),
                              f"{_fmt(tp['samples_per_s'], 2)} (b={tp['batch']})",
                              _fmt(data["peak_mb"], 1)]
                lines.append("| " + " | ".join([
                    row["preset"] if first else "", where if first else "",
                    mode if first else "", DECODERS[kv],
                    _fmt(entry["params"]["total"] / 1e6, 2), _fmt(entry["gflops"]["total"], 2),
                    *timing, split]) + " |")
                first = False
            r = row["ratios"][mode]
            lines.append("| | | | **VIPA / classic** | " + " | ".join([
                _fmt(r["params"], 3, "x"), _fmt(r["gflops"], 3, "x"), _fmt(r["latency"], 3, "x"),
                _fmt(r["throughput"], 3, "x"), _fmt(r["peak_mb"], 3, "x"), ""]) + " |")
        plan = row["plan"]
        notes.append(
            f"- {row['preset']} on {row['device']} ({row['image_size']} px): median of "
            f"{plan['runs']} runs after {plan['warmup']} warm-up call(s), batch sizes "
            f"{'/'.join(map(str, plan['batch_sizes']))}, component split from "
            f"{plan['component_runs']} round(s) ({plan['reason']})."
            + (f" {row['note']}." if row.get("note") else ""))
        for kv, entry in row["models"].items():
            compiled = entry["modes"].get("compiled", {})
            if compiled.get("first_call_ms"):
                notes.append(f"  - {DECODERS[kv]}: first compiled call (compiling) "
                             f"{compiled['first_call_ms'] / 1000:.1f} s, latency speed-up "
                             f"{_fmt(compiled.get('latency_speedup_vs_eager'), 2, 'x')}")
    lines += ["", "Plans:", *notes, "",
              "Peak memory: " + "; ".join(sorted({f"{r['device']}: {r['memory_method']}"
                                                 for r in report["results"]})) + "."]
    if report.get("cold_start"):
        lines += ["", "| `vipa predict` cold start | device | checkpoint MB | median s "
                  "| imports alone s | runs |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        for cold in report["cold_start"]:
            if "error" in cold:
                lines.append(f"| {cold['preset']} | {cold['device']} | failed: "
                             f"{cold['error'][:100]} | | | |")
                continue
            lines.append(f"| {cold['preset']} preset, random weights | {cold['device']} | "
                         f"{cold['checkpoint_mb']:.1f} | {cold['median_s']:.2f} | "
                         f"{cold['imports_median_s']:.2f} | {cold['runs']} |")
    return "\n".join(lines) + "\n"


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("batch sizes are positive integers, e.g. 1,2,4")
    return values


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown table; write JSON / markdown when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="cpu,paper",
                        help="comma-separated presets (names or YAML files)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, auto or a comma list (default: cpu, plus cuda if present)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per batch size (default 10; 3 for a slow CPU model)")
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
    args = parser.parse_args(argv)

    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        devices = resolve_devices(args.device)
        report: dict[str, Any] = {"machine": machine_info(devices), "results": [],
                                  "cold_start": []}
        for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
            for device in devices:
                print(f"[speed] {preset} on {device} ...", file=sys.stderr, flush=True)
                report["results"].append(bench_preset(preset, device, args))
        if not args.skip_cold_start:
            for device in devices:
                print(f"[speed] cold start on {device} ...", file=sys.stderr, flush=True)
                report["cold_start"].append(cold_start(args.cold_start_preset, device,
                                                       args.cold_start_runs, args.set,
                                                       args.threads))
    finally:
        torch.set_num_threads(threads_before)
    if hasattr(os, "getloadavg"):
        report["machine"]["load_average_end"] = list(os.getloadavg())
    text = markdown(report)
    print(text, end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
