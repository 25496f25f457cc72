"""What ``python -m bench.ablation`` trains: budgets, variants, their configs, results.jsonl.

The two budgets and the variants are plain dictionaries (edit them to re-tune);
:func:`make_plan` resolves every variant and finds the ones that reuse another
variant's runs; ``results.jsonl`` holds one row per finished (variant, seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipa.config import RunConfig, apply_overrides, resolve_config, to_dict

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
ROOT = Path(__file__).resolve().parent.parent
RETRIEVAL_SAMPLES = 200  # val samples bench.retrieval scores per run

log = logging.getLogger("ablation")


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
