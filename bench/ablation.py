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

This module trains the study and is its command line; the budgets, variants and
``results.jsonl`` are in :mod:`bench.ablation_plan`, the statistics in
:mod:`bench.ablation_summary`, the tables, chart and docs section in
:mod:`bench.ablation_report`.

    python -m bench.ablation --quick                     # < 30 min on 2 CPU cores
    python -m bench.ablation --mode proxy                # the proxy the decisions use
    python -m bench.ablation                             # the full budget
    python -m bench.ablation --quick --seeds 0 --variants full,kv-language
    python -m bench.ablation --quick --summarize-only    # tables, chart, docs only
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.ablation_plan import (
    DEFAULT_SEEDS,
    METRICS,
    MODES,
    RETRIEVAL_SAMPLES,
    ROOT,
    RUN_SECONDS,
    VARIANTS,
    Plan,
    append_result,
    describe_budget,
    last_validation,
    log,
    make_plan,
    read_results,
    recipe_hash,
    variant_config,
)
from bench.ablation_report import markdown_table, report
from vipa.config import RunConfig, saved_run_config


class StudyInterrupted(Exception):
    """Ctrl-C / SIGTERM stopped the study; everything finished so far is recorded."""


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
