"""The outputs of an ablation study: markdown tables, bar chart, docs section, summary.json.

:func:`report` rebuilds them all from ``results.jsonl`` alone, so a study can be
summarized again at any time without training.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.ablation_plan import GRID, GRID_ALIASES, RETRIEVAL_SAMPLES, ROOT, read_results
from bench.ablation_summary import RQ2_TARGET_POINTS, summarize

BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"


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
