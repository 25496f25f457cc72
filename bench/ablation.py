"""Ablation study of VIPA on the built-in data at a fixed training budget.

Every variant (a few config overrides on top of the base preset) trains with
the same steps and the same seeds; the score of a run is its LAST validation,
at the fixed budget, not its best checkpoint: picking the best of several
validations would reward the noisiest variants. Each finished (variant, seed)
is appended to ``<out>/results.jsonl`` at once, so a stopped study (Ctrl-C,
crash) loses at most the run in progress, and that run resumes from its last
checkpoint on the next start. Then the mean and sample std over seeds, a bar
chart and a section of ``docs/results.md`` (between ``<!-- ablation:begin -->``
and ``<!-- ablation:end -->``) are rebuilt from ``results.jsonl`` alone.

    python -m bench.ablation --quick                     # < 30 min on 2 CPU cores
    python -m bench.ablation --mode proxy                # the proxy the decisions use
    python -m bench.ablation                             # the full budget
    python -m bench.ablation --quick --seeds 0 --variants full,kv-language
    python -m bench.ablation --quick --summarize-only    # tables, chart, docs only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipa.config import RunConfig, apply_overrides, resolve_config, saved_run_config, to_dict

# --------------------------------------------------------------------------- budgets
# The two training budgets, as overrides on top of the base preset (`--base-preset`,
# default `cpu`). Edit these to re-tune; docs/results.md describes whatever was run.
# train.val_every defaults to train.max_steps: one validation, at the fixed budget.
QUICK: dict[str, Any] = {
    # The conv `tiny` encoder learns to ground words several times sooner than a
    # from-scratch Swin, so a one-minute run already separates the variants.
    "model.encoder.name": "tiny",
    "model.encoder.preset": "small",
    "model.image_size": 64,
    "model.veg.level": 8,  # an 8x8 token grid at 64 px, so top-K retrieval still selects
    # About the target's share of that grid (3 of 64 tokens on average): with K = 16, 13 of
    # the 16 expression tokens were distractors (measured with python -m bench.retrieval).
    "model.veg.k": 4,
    "train.encoder_lr_scale": 1.0,  # the conv encoder trains well at the full lr
    "train.batch_size": 8,
    "train.lr": 0.002,
    "train.max_steps": 500,
    "data.max_val_samples": 100,
}
# QUICK three times as long: at 500 steps the seed spread (4-8 points) hid every RQ3 switch;
# at 1500 the classic decoder's spread is 0.3 and the ranking of full VIPA, vipa's VEG and
# the classic decoder is the README-scale run's (docs/results.md, "Proxy check").
PROXY: dict[str, Any] = {**QUICK, "train.max_steps": 1500, "data.max_val_samples": 200}
FULL: dict[str, Any] = {
    "train.max_steps": 600,
}
MODES: dict[str, dict[str, Any]] = {"quick": QUICK, "proxy": PROXY, "full": FULL}
# Wall time of one run, validation included, only for the estimate printed at the start
# (once runs are recorded, their measured mean is used). quick: 41-56 s measured on 2 quiet
# cores (2026-11-25); full: 600 steps at the cpu preset's ~29 samples/s, plus validation.
RUN_SECONDS: dict[str, float] = {"quick": 50.0, "proxy": 150.0, "full": 350.0}

# --------------------------------------------------------------------------- variants
VARIANTS: dict[str, list[str]] = {
    "full": [],
    # the paper's VEG and decoder
    "paper": ["veg.context_layers=0", "veg.fallback=false", "decoder.kv=visual"],
    "no-context": ["veg.context_layers=0"],
    "no-fallback": ["veg.fallback=false"],
    "kv-visual": ["decoder.kv=visual"],
    "no-expression-dropout": ["decoder.expression_dropout=0"],
    "detach-expression": ["veg.detach_expression=true"],
    "kv-language": ["decoder.kv=language"],
    "no-retrieval": ["veg.retrieval=off"],
    "no-refinement": ["veg.refine=off"],
    "cues-local": ["veg.cues=local"],
    "cues-global": ["veg.cues=global"],
    "cues-local-global": ["veg.cues=local-global"],
    "fusion-early": ["fusion.name=early"],
    "fusion-late": ["fusion.name=late"],
    "fusion-none": ["fusion.name=none"],
    "fusion-early-kv-visual": ["fusion.name=early", "decoder.kv=visual"],
    "fusion-late-kv-visual": ["fusion.name=late", "decoder.kv=visual"],
    "fusion-none-kv-visual": ["fusion.name=none", "decoder.kv=visual"],
    "fusion-early-kv-language": ["fusion.name=early", "decoder.kv=language"],
    "fusion-late-kv-language": ["fusion.name=late", "decoder.kv=language"],
    "fusion-none-kv-language": ["fusion.name=none", "decoder.kv=language"],
    "image-only": ["data.text=empty"],
}
# The fusion x key/value grid: (fusion, its variants with kv=visual (the paper's VIPA), with
# the preset's decoder (vipa's kv=both with expression dropout), with kv=language).
GRID: list[tuple[str, str, str, str]] = [
    (fusion, f"fusion-{fusion}-kv-visual", f"fusion-{fusion}", f"fusion-{fusion}-kv-language")
    for fusion in ("early", "late", "none")]
# The same cells under their short names when the fusion is the preset's.
GRID_ALIASES = ("kv-visual", "full", "kv-language")
DEFAULT_SEEDS = (0, 1, 2)
METRICS = ("mIoU", "oIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9")
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"
ROOT = Path(__file__).resolve().parent.parent

# The paper's claims, as the sign of (variant - full) in mIoU each one predicts.
# "fusion-*" claims compare against image-only instead (see _verdicts).
CLAIMS: list[tuple[str, str, str]] = [
    ("RQ1/RQ2", "kv-language", "visual key/value (VIPA) beats language key/value"),
    ("vipa", "paper", "vipa's VEG and decoder beat the paper's"),
    ("vipa", "kv-visual", "the words beside the expression help"),
    ("vipa", "no-expression-dropout", "expression dropout helps"),
    ("vipa", "no-context", "context layers help"),
    ("vipa", "no-fallback", "the fallback token helps"),
    ("RQ3", "no-retrieval", "retrieval helps"),
    ("RQ3", "no-refinement", "refinement helps"),
    ("RQ3", "cues-local", "local-global cues beat local only"),
    ("RQ3", "cues-global", "local-global cues beat global only"),
    ("RQ4", "fusion-early", "VIPA works with early fusion"),
    ("RQ4", "fusion-late", "VIPA works with late fusion"),
    ("RQ4", "fusion-none", "VIPA works with no fusion"),
    ("data", "image-only", "the data needs language: image-only is far below full"),
]
RQ2_TARGET_POINTS = 3.0
RETRIEVAL_SAMPLES = 200  # val samples bench.retrieval scores per run

log = logging.getLogger("ablation")


class StudyInterrupted(Exception):
    """Ctrl-C / SIGTERM stopped the study; everything finished so far is recorded."""


# --------------------------------------------------------------------------- configs


def variant_config(variant: str, seed: int, run_dir: Path, *, mode: str = "full",
                   base_preset: str = "cpu", sets: Sequence[str] = ()) -> RunConfig:
    """The run config of one (variant, seed): preset, mode budget, --set, variant, seed.

    The variant's own overrides come after ``--set`` so a study-wide setting can
    never undo what the variant is about.
    """
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    budget = [f"{key}={value}" for key, value in MODES[mode].items()]
    overrides = [*budget, *sets, *VARIANTS[variant], f"train.seed={seed}",
                 f"train.output={run_dir}"]
    cfg = resolve_config(base_preset, None, overrides)
    if _given([*budget, *sets], "train.val_every") is None and cfg.train.max_steps:
        cfg = apply_overrides(cfg, [f"train.val_every={cfg.train.max_steps}"])
    return cfg


def _given(overrides: Sequence[str], key: str) -> str | None:
    for override in reversed(overrides):
        name, _, value = override.partition("=")
        if name.strip().removeprefix("--") in (key, key.removeprefix("model.")):
            return value
    return None


def recipe_hash(cfg: RunConfig) -> str:
    """A fingerprint of everything but the seed and the output folder.

    Equal hashes mean the same training recipe: a variant equal to ``full``
    reuses its runs, and rows from an edited budget are never mixed in.
    """
    data = to_dict(cfg)
    data["train"].pop("seed")
    data["train"].pop("output")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def describe_budget(cfg: RunConfig) -> dict[str, Any]:
    """The budget facts the docs state, read from a resolved config."""
    m, t = cfg.model, cfg.train
    return {"encoder": m.encoder.name, "encoder_preset": m.encoder.preset,
            "weights": m.encoder.weights, "fusion": m.fusion.name, "veg_k": m.veg.k,
            "decoder_dim": m.decoder.dim, "image_size": m.image_size,
            "max_steps": t.max_steps, "epochs": t.epochs, "batch_size": t.batch_size,
            "lr": t.lr, "data": cfg.data.name, "max_val_samples": cfg.data.max_val_samples}


@dataclass
class Plan:
    """Which variants train and which reuse another variant's runs (same recipe)."""

    configs: dict[str, RunConfig]  # a seed-0 config per variant (for hashes and budget)
    same_as: dict[str, str]  # alias variant -> the variant whose runs it reuses

    def trained(self) -> list[str]:
        return [v for v in self.configs if v not in self.same_as]


def make_plan(variants: Sequence[str], out: Path, *, mode: str, base_preset: str,
              sets: Sequence[str]) -> Plan:
    """Resolve every variant and find the ones identical to an earlier one (e.g. = full)."""
    configs: dict[str, RunConfig] = {}
    same_as: dict[str, str] = {}
    by_hash: dict[str, str] = {}
    order = ["full", *[v for v in variants if v != "full"]] if "full" in variants else variants
    for variant in order:
        cfg = variant_config(variant, 0, out / "runs" / f"{variant}-seed0", mode=mode,
                             base_preset=base_preset, sets=sets)
        configs[variant] = cfg
        key = recipe_hash(cfg)
        if key in by_hash:
            same_as[variant] = by_hash[key]
        else:
            by_hash[key] = variant
    return Plan(configs, same_as)


# --------------------------------------------------------------------------- results.jsonl


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of ``results.jsonl``; a torn last line (killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d is not JSON (a run killed while writing?); skipped", path,
                        number)
    return rows


def append_result(path: Path, row: dict[str, Any]) -> None:
    """One line per run, flushed to disk before the next run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def last_validation(run_dir: Path) -> dict[str, Any]:
    """The last ``val`` record of a run's ``metrics.jsonl`` (the score at the fixed budget)."""
    records = read_results(run_dir / "metrics.jsonl")
    vals = [r for r in records if "val" in r]
    if not vals:
        raise RuntimeError(f"{run_dir}: no validation in metrics.jsonl")
    return {"step": vals[-1]["step"], **{k: vals[-1]["val"][k] for k in METRICS}}


# --------------------------------------------------------------------------- training


def run_one(cfg: RunConfig, variant: str, seed: int, *,
            train_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Train (or resume) one run and return its results row.

    A run folder with a ``last`` checkpoint of the same recipe is resumed (on CPU
    that ends with exactly the weights of an uninterrupted run); one from another
    recipe, or without a checkpoint, is started again from scratch.
    """
    if train_fn is None:
        from vipa.training import train as train_fn
    run_dir = Path(cfg.train.output)
    saved = saved_run_config(run_dir) if run_dir.is_dir() else None
    resume = (saved is not None and (run_dir / "last.safetensors").is_file()
              and recipe_hash(saved) == recipe_hash(cfg) and saved.train.seed == cfg.train.seed)
    if run_dir.exists() and not resume:
        log.info("%s: no usable checkpoint of this recipe; starting it again", run_dir)
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    result = train_fn(cfg, resume=resume, progress=False)
    wall = time.perf_counter() - start
    if result.stopped_by is not None:
        raise StudyInterrupted(f"{variant} seed {seed} stopped by {result.stopped_by} at step "
                               f"{result.step}; its checkpoint is kept")
    metrics = last_validation(run_dir)
    return {**retrieval_figures(run_dir, cfg), "variant": variant, "seed": seed,
            "recipe": recipe_hash(cfg),
            "overrides": VARIANTS[variant], "score": "last validation",
            "metrics": {k: metrics[k] for k in METRICS}, "step": metrics["step"],
            "wall_s": round(wall, 1), "resumed": resume, "run_dir": str(run_dir),
            "budget": describe_budget(cfg), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def retrieval_figures(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """``bench.retrieval`` on the run's last weights: does the VEG retrieve the target?"""
    last = run_dir / "last.safetensors"
    if not last.is_file() or not cfg.model.veg.retrieval:
        return {}
    from bench.retrieval import diagnose

    found = diagnose(last, cfg.data, cfg.data.val_split, RETRIEVAL_SAMPLES)
    return {"retrieval": {key: round(found[key], 4) for key in
                          ("top1", "precision", "cells", "k", "grid_tokens")}}


def run_study(variants: Sequence[str], seeds: Sequence[int], out: Path, *, mode: str = "full",
              base_preset: str = "cpu", sets: Sequence[str] = (),
              keep_checkpoints: bool = False, train_fn: Callable[..., Any] | None = None,
              echo: Callable[[str], None] = print) -> Plan:
    """Train every missing (variant, seed) of the plan, appending each row as it ends."""
    plan = make_plan(variants, out, mode=mode, base_preset=base_preset, sets=sets)
    results_path = out / "results.jsonl"
    rows = read_results(results_path)
    for variant, target in plan.same_as.items():
        echo(f"{variant}: same recipe as {target}; reusing its runs (not trained twice)")
    done = {(r["variant"], r["seed"]): r for r in rows}
    todo = []
    for variant in plan.trained():
        key = recipe_hash(plan.configs[variant])
        for seed in seeds:
            row = done.get((variant, seed))
            if row is not None and row["recipe"] != key:
                raise SystemExit(
                    f"{results_path} holds {variant} seed {seed} from another recipe (the "
                    "budget, --base-preset or --set changed); use another --out or move "
                    "that file away")
            if row is None:
                todo.append((variant, seed))
    measured = [r["wall_s"] for r in rows if "wall_s" in r and not r.get("resumed")]
    per_run = statistics.mean(measured) if measured else RUN_SECONDS[mode]
    echo(f"{len(todo)} run(s) to train, {len(plan.trained()) * len(seeds) - len(todo)} "
         f"already in {results_path}; about {len(todo) * per_run / 60:.0f} min at "
         f"{per_run:.0f} s per run")
    for index, (variant, seed) in enumerate(todo, 1):
        run_dir = out / "runs" / f"{variant}-seed{seed}"
        cfg = variant_config(variant, seed, run_dir, mode=mode, base_preset=base_preset,
                             sets=sets)
        echo(f"[{index}/{len(todo)}] {variant} seed {seed} -> {run_dir}")
        row = run_one(cfg, variant, seed, train_fn=train_fn)
        append_result(results_path, row)
        if not keep_checkpoints:  # recorded; the weights of 27 runs would only fill the disk
            for path in [*run_dir.glob("*.safetensors"), *run_dir.glob("*.pt")]:
                path.unlink()
        m = row["metrics"]
        echo(f"    mIoU {100 * m['mIoU']:.2f}  oIoU {100 * m['oIoU']:.2f}  "
             f"({row['wall_s']:.0f} s{', resumed' if row['resumed'] else ''})")
    return plan


# --------------------------------------------------------------------------- summary


def _stats(values: list[float]) -> dict[str, Any]:
    """Mean and sample std (n - 1) in points; std is None with a single seed."""
    points = [100 * v for v in values]
    return {"mean": statistics.mean(points) if points else None,
            "std": statistics.stdev(points) if len(points) > 1 else None,
            "values": points}


def summarize(rows: Sequence[dict[str, Any]], variants: Sequence[str], seeds: Sequence[int],
              same_as: dict[str, str] | None = None) -> dict[str, Any]:
    """Per-variant mean / sample std of mIoU and oIoU (points) and the delta vs ``full``.

    Only rows of the requested seeds count, so every variant is averaged over
    the same seed set; a variant in ``same_as`` shows the runs it reuses.
    """
    same_as = same_as or {}
    seed_set = set(seeds)
    table: dict[str, Any] = {}
    for variant in variants:
        source = same_as.get(variant, variant)
        mine = sorted((r for r in rows if r["variant"] == source and r["seed"] in seed_set),
                      key=lambda r: r["seed"])
        retrieval = [r["retrieval"] for r in mine if "retrieval" in r]
        table[variant] = {
            "same_as": same_as.get(variant), "overrides": VARIANTS.get(variant, []),
            "seeds": [r["seed"] for r in mine], "n": len(mine),
            **{k: _stats([r["metrics"][k] for r in mine]) for k in ("mIoU", "oIoU")},
            "retrieval": {key: _stats([r[key] for r in retrieval])
                          for key in ("top1", "precision")} if retrieval else None,
        }
    full = table.get("full")
    for entry in table.values():
        for k in ("mIoU", "oIoU"):
            ok = full is not None and full[k]["mean"] is not None and entry[k]["mean"] is not None
            entry[f"delta_{k}"] = entry[k]["mean"] - full[k]["mean"] if ok else None
    budget = next((r["budget"] for r in rows if r["variant"] == "full"),
                  next((r["budget"] for r in rows), {}))
    summary = {"seeds": sorted(seed_set), "variants": table, "budget": budget,
               "score": "last validation at the fixed budget"}
    summary["verdicts"] = _verdicts(table)
    summary["rq2_targets"] = _rq2_targets(table)
    return summary


def _direction(delta: float | None, noise: float | None, n: int, expect: int) -> str:
    """The explicit rule: a difference counts only when |delta| > the larger seed std."""
    if delta is None:
        return "not run"
    if n < 2 or noise is None:
        return "inconclusive (one seed, no std)"
    if abs(delta) <= noise:
        return "inconclusive (within noise)"
    return "reproduced" if delta * expect > 0 else "not reproduced"


def _verdicts(table: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per claim in CLAIMS whose variant was run (mIoU decides; oIoU shown)."""
    out = []
    full, image_only = table.get("full"), table.get("image-only")
    for rq, variant, claim in CLAIMS:
        entry = table.get(variant)
        if entry is None or entry["n"] == 0:
            continue
        fusion = variant.startswith("fusion-")
        # A fusion "works" when its model is clearly above the image-only baseline;
        # every other claim predicts the variant falls below full.
        reference, name, expect = ((image_only, "image-only", +1) if fusion
                                   else (full, "full", -1))
        if reference is None or reference["n"] == 0 or reference is entry:
            continue
        deltas = {k: entry[k]["mean"] - reference[k]["mean"] for k in ("mIoU", "oIoU")}
        stds = [s for s in (entry["mIoU"]["std"], reference["mIoU"]["std"]) if s is not None]
        noise = max(stds) if len(stds) == 2 else None
        n = min(entry["n"], reference["n"])
        out.append({"rq": rq, "variant": variant, "claim": claim, "vs": name,
                    "delta_mIoU": deltas["mIoU"], "delta_oIoU": deltas["oIoU"],
                    "noise": noise, "verdict": _direction(deltas["mIoU"], noise, n, expect)})
    return out


def _rq2_targets(table: dict[str, Any]) -> list[dict[str, Any]]:
    """RQ2's target (VIPA >= classic + 3 mIoU) for the paper's VIPA and the preset's decoder."""
    out = []
    classic = table.get("kv-language")
    for variant in ("kv-visual", "full"):
        entry = table.get(variant)
        if not entry or not entry["n"] or not classic or not classic["n"]:
            continue
        gap = entry["mIoU"]["mean"] - classic["mIoU"]["mean"]
        out.append({"variant": variant, "gap_mIoU": gap, "target": RQ2_TARGET_POINTS,
                    "met": gap >= RQ2_TARGET_POINTS})
    return out


# --------------------------------------------------------------------------- outputs


def _pm(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.1f}" + (f" ± {stat['std']:.1f}" if stat["std"] is not None else "")


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """Variants as rows: overrides, seeds, mIoU / oIoU mean ± std and delta vs full."""
    lines = ["| variant | overrides | seeds | mIoU | oIoU | Δ mIoU | Δ oIoU |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, entry in summary["variants"].items():
        overrides = ", ".join(f"`{o}`" for o in entry["overrides"]) or "(preset)"
        if entry["same_as"]:
            overrides += f" = {entry['same_as']} (its runs reused)"
        lines.append(f"| {name} | {overrides} | {entry['n']} | {_pm(entry['mIoU'])} | "
                     f"{_pm(entry['oIoU'])} | {_signed(entry['delta_mIoU'])} | "
                     f"{_signed(entry['delta_oIoU'])} |")
    return "\n".join(lines)


def grid_table(summary: dict[str, Any]) -> str:
    """The fusion x key/value grid (mIoU mean ± std), for the cells the study ran."""
    table = summary["variants"]
    default = summary["budget"].get("fusion")  # its cells are also kv-visual, full, ...

    def cell(name: str, alias: str, fusion: str) -> dict[str, Any] | None:
        entry = table.get(name)
        if (entry is None or not entry["n"]) and fusion == default:
            entry = table.get(alias)
        return entry if entry and entry["n"] else None

    rows = [(fusion, [cell(name, alias, fusion) for name, alias in zip(names, GRID_ALIASES,
                                                                       strict=True)])
            for fusion, *names in GRID]
    if not any(any(cells) for _, cells in rows):
        return ""
    lines = ["| fusion | VIPA (kv=visual) mIoU | preset decoder (kv=both) mIoU | classic "
             "(kv=language) mIoU | VIPA − classic | preset − classic |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for fusion, (visual, both, language) in rows:
        gaps = [e["mIoU"]["mean"] - language["mIoU"]["mean"] if e and language else None
                for e in (visual, both)]
        lines.append(f"| {fusion} | " + " | ".join(_pm(e["mIoU"]) if e else "-"
                                                   for e in (visual, both, language))
                     + f" | {_signed(gaps[0])} | {_signed(gaps[1])} |")
    return "\n".join(lines)


def retrieval_table(summary: dict[str, Any]) -> str:
    """Per variant: share of samples whose top-1 token is on the target, share of K on it."""
    lines = ["| variant | top-1 token on the target | share of the K tokens on the target |",
             "| --- | ---: | ---: |"]
    found = [(name, e["retrieval"]) for name, e in summary["variants"].items()
             if e.get("retrieval")]
    for name, r in found:
        lines.append(f"| {name} | {_pm(r['top1'])} | {_pm(r['precision'])} |")
    return "\n".join(lines) if found else ""


def plot(summary: dict[str, Any], path: Path) -> Path:
    """Bar chart: mean mIoU and oIoU per variant with sample-std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in summary["variants"].items() if e["n"]]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.8 * len(names) + 2), 3.8))
    width = 0.38
    for offset, key in ((-width / 2, "mIoU"), (width / 2, "oIoU")):
        stats = [summary["variants"][n][key] for n in names]
        axis.bar([i + offset for i in range(len(names))], [s["mean"] for s in stats], width,
                 yerr=[s["std"] or 0.0 for s in stats], capsize=3, label=key)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_ylabel("points (%)")
    seeds = ", ".join(map(str, summary["seeds"]))
    axis.set_title(f"VIPA ablations, built-in data (seeds {seeds}; bars: mean ± sample std)")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def docs_section(summary: dict[str, Any], *, mode: str, results_path: str,
                 image_path: str, command: str) -> str:
    """The generated markdown between the markers: budget, table, chart, verdicts."""
    b = summary["budget"]
    length = (f"{b.get('max_steps')} steps" if b.get("max_steps")
              else f"{b.get('epochs')} epochs")
    preset = f" {b['encoder_preset']}" if b.get("encoder_preset") else ""
    weights = b.get("weights") or "default"  # None: the encoder's own default
    val = (f"an evenly spread {b['max_val_samples']}-sample subset of val"
           if b.get("max_val_samples") else "the whole val split")
    lines = [
        f"### Ablation results ({mode} mode)",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} from `{results_path}` "
        "(do not edit by hand; `--summarize-only` rebuilds it).",
        f"Budget: {b.get('encoder')}{preset} ({weights} weights), "
        f"{b.get('fusion')} fusion, k = {b.get('veg_k')}, d = {b.get('decoder_dim')}, "
        f"{b.get('image_size')} px, {length} of batch {b.get('batch_size')}, lr "
        f"{b.get('lr')}, data {b.get('data')}; validation on {val}. Seeds: "
        f"{', '.join(map(str, summary['seeds']))} for every variant. Score: the last "
        "validation at the fixed budget, not the best checkpoint (choosing the best of "
        "several validations would favour noisy variants). Values are points (%): mean ± "
        "sample std over seeds; Δ = variant − full.",
        "",
        markdown_table(summary),
        "",
        f"![ablation bar chart]({image_path})",
        "",
    ]
    grid, retrieval = grid_table(summary), retrieval_table(summary)
    if grid:
        lines += ["Fusion x key/value (the six cells of RQ2 / RQ4):", "", grid, ""]
    if retrieval:
        lines += ["Retrieval (`bench.retrieval` on each run's last weights, "
                  f"{RETRIEVAL_SAMPLES} val samples; percent, mean ± std over seeds):", "",
                  retrieval, ""]
    lines += [
        "",
        "| RQ | paper's claim | measured: Δ mIoU (Δ oIoU) vs | larger seed std | verdict |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for v in summary["verdicts"]:
        noise = "-" if v["noise"] is None else f"{v['noise']:.1f}"
        lines.append(f"| {v['rq']} | {v['claim']} | {v['variant']}: "
                     f"{_signed(v['delta_mIoU'])} ({_signed(v['delta_oIoU'])}) vs {v['vs']} | "
                     f"{noise} | {v['verdict']} |")
    lines += [
        "",
        "Rule: a claim predicts a sign for the mIoU difference (variant below full; for "
        "RQ4, the fusion's model above image-only). With |Δ| larger than the larger of the "
        "two seed stds the direction counts: *reproduced* when it has the predicted sign, "
        "*not reproduced* otherwise; else *inconclusive (within noise)*.",
        "",
    ]
    if not summary["rq2_targets"]:
        lines.append("RQ2 target (VIPA − kv-language ≥ "
                     f"{RQ2_TARGET_POINTS:g} mIoU points): not measured in this study.")
    for target in summary["rq2_targets"]:
        lines.append(f"RQ2 target ({target['variant']} − kv-language ≥ {target['target']:g} "
                     f"mIoU points at equal budget): measured {target['gap_mIoU']:+.1f} points, "
                     f"**{'met' if target['met'] else 'not met'}**.")
    return "\n".join(lines)


def write_docs(docs: Path, section: str) -> None:
    """Replace the text between the markers (append them, with a heading, when missing)."""
    text = docs.read_text(encoding="utf-8") if docs.is_file() else "# Results\n"
    block = f"{BEGIN}\n{section.strip()}\n{END}"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Ablation study\n\n" + block + "\n"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text, encoding="utf-8")


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve()).replace(os.sep, "/")


def report(out: Path, variants: Sequence[str], seeds: Sequence[int], *, mode: str,
           docs: Path | None, image: Path, same_as: dict[str, str],
           command: str) -> dict[str, Any]:
    """summary.json, the markdown table, the chart and the docs section, from results.jsonl."""
    rows = read_results(out / "results.jsonl")
    summary = summarize(rows, variants, seeds, same_as)
    summary["mode"] = mode
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(markdown_table(summary) + "\n", encoding="utf-8")
    if any(e["n"] for e in summary["variants"].values()):
        plot(summary, image)
    if docs is not None:
        section = docs_section(summary, mode=mode,
                               results_path=_relative(out / "results.jsonl", ROOT),
                               image_path=_relative(image, docs.parent), command=command)
        write_docs(docs, section)
    return summary


# --------------------------------------------------------------------------- CLI


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None, *,
         train_fn: Callable[..., Any] | None = None) -> int:
    """Run the study (or only summarize it); 130 when stopped by Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.ablation",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=list(MODES), default=None,
                        help="budget: quick (500 steps of the tiny encoder), proxy (1500 "
                             "steps, the one that ranks recipes as the README run does) or "
                             "full (the cpu preset itself)")
    parser.add_argument("--quick", action="store_true", help="the same as --mode quick")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)),
                        help="comma-separated train.seed values, the same for every variant")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="study folder (default bench/results/ablation[-quick])")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "results.md",
                        help="markdown file whose ablation section is rewritten")
    parser.add_argument("--no-docs", action="store_true", help="leave the docs alone")
    parser.add_argument("--image", type=Path, default=None,
                        help="bar chart path (default docs/images/ablation[-quick].png)")
    parser.add_argument("--base-preset", default="cpu", help="preset name or config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. train.lr=2e-3")
    parser.add_argument("--summarize-only", action="store_true",
                        help="rebuild summary, chart and docs from results.jsonl; no training")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's weights (by default only configs, metrics and "
                             "curves are kept once the score is recorded)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 when the "
                             "cores are shared with other jobs, where a second thread mostly "
                             "waits")
    parser.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    mode = args.mode or ("quick" if args.quick else "full")
    suffix = "" if mode == "full" else f"-{mode}"
    out = args.out or ROOT / "bench" / "results" / f"ablation{suffix}"
    image = args.image or ROOT / "docs" / "images" / f"ablation{suffix}.png"
    variants = _csv(args.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        parser.error(f"--seeds must be integers separated by commas, got {args.seeds!r}")
    if not seeds or not variants:
        parser.error("give at least one seed and one variant")
    command = "python -m bench.ablation" + ("" if mode == "full" else f" --mode {mode}")
    if args.seeds != ",".join(map(str, DEFAULT_SEEDS)):
        command += f" --seeds {args.seeds}"
    if args.variants != ",".join(VARIANTS):
        command += f" --variants {args.variants}"
    command += "".join(f" --set {s}" for s in args.set)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    try:
        if args.summarize_only:
            plan = make_plan(variants, out, mode=mode, base_preset=args.base_preset,
                             sets=args.set)
        else:
            start = time.perf_counter()
            plan = run_study(variants, seeds, out, mode=mode, base_preset=args.base_preset,
                             sets=args.set, keep_checkpoints=args.keep_checkpoints,
                             train_fn=train_fn)
            print(f"study done in {(time.perf_counter() - start) / 60:.1f} min")
    except (KeyboardInterrupt, StudyInterrupted) as stop:
        print(f"\nstopped ({stop or 'Ctrl-C'}); finished runs are in {out / 'results.jsonl'}. "
              "Run the same command again to continue.", file=sys.stderr)
        return 130
    summary = report(out, variants, seeds, mode=mode, docs=None if args.no_docs else args.docs,
                     image=image, same_as=plan.same_as, command=command)
    print(markdown_table(summary))
    for verdict in summary["verdicts"]:
        print(f"{verdict['rq']:8} {verdict['variant']:14} Δ mIoU {verdict['delta_mIoU']:+6.1f} "
              f"vs {verdict['vs']:10} -> {verdict['verdict']}")
    for t in summary["rq2_targets"]:
        print(f"RQ2 target: {t['variant']} - kv-language = {t['gap_mIoU']:+.1f} mIoU points "
              f"({'met' if t['met'] else 'not met'}, target {t['target']:g})")
    missing = [v for v, e in summary["variants"].items() if e["n"] < len(seeds)]
    if missing:
        print(f"incomplete: {', '.join(missing)} have fewer than {len(seeds)} seeds",
              file=sys.stderr)
    print(f"results: {out / 'summary.json'}, chart: {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
