"""Every number of one (preset, device) in ``python -m bench.speed``: VIPA vs classic decoder.

Builds both models from the preset, times them (:mod:`bench.speed_timing`),
measures their parts and memory, and puts it all in one JSON-able dict with the
VIPA / classic ratios.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import torch

from bench import components
from bench.memory import memory_method, weights_mb
from bench.models import DECODERS, PHRASE, build, compiled_copy, preset_model_config
from bench.speed_machine import one_line, precision
from bench.speed_timing import (
    Variant,
    measure_components,
    quiet_truncation,
    time_runtime,
)
from vipa.config import ModelConfig
from vipa.inference.runtime import TorchRuntime


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
                errors[f"{kv}/compiled"] = one_line(error)
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
