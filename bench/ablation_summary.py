"""The statistics of an ablation study: mean and std over seeds, verdicts on the paper's claims.

Everything here reads the rows of ``results.jsonl`` and returns plain dicts;
nothing trains and nothing is written.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.ablation_plan import VARIANTS

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
