"""Markdown of a ``bench.speed`` report, and ``emit``, which closes every benchmark's output."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.models import DECODERS

HEADER = [
    "| preset | device | mode | decoder | params (M) | GFLOPs | latency ms (batch 1) "
    "| throughput /s (best batch) | peak MB (batch 1) "
    "| eager time split % enc / fusion / VEG / dec |",
    "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
]


def emit(report: dict[str, Any], render: Callable[[dict[str, Any]], str],
         json_path: Path | None, markdown_path: Path | None) -> str:
    """Close a benchmark: the load average at its end, print the markdown, write the files.

    ``render`` runs after the load average is stored, so the markdown's machine
    line shows it.
    """
    report.setdefault("machine", {})["load_average_end"] = list(os.getloadavg())
    text = render(report)
    print(text, end="" if text.endswith("\n") else "\n")
    for path, content in ((json_path, json.dumps(report, indent=2) + "\n"),
                          (markdown_path, text)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    return text


def run_and_emit(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], dict],
                 render: Callable[[dict[str, Any]], str], argv: list[str] | None) -> int:
    """A benchmark's ``main``: add ``--json`` / ``--markdown``, parse, run, :func:`emit`."""
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown")
    args = parser.parse_args(argv)
    emit(run(args), render, args.json, args.markdown)
    return 0


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def machine_line(machine: dict[str, Any]) -> str:
    """Where and when: CPU, threads, versions, date and the load average around the run."""
    return (
        f"Machine: {machine['cpu']} ({machine['cpu_count']} CPU cores, torch threads "
        f"{machine['torch_threads']}); torch {machine['torch']}, Python {machine['python']}; "
        f"{machine['date']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average'] or [])}, at the end "
        f"{', '.join(f'{x:.2f}' for x in machine.get('load_average_end') or [])} "
        "(1, 5, 15 min).")


def _model_cells(entry: dict[str, Any], mode: str) -> list[str]:
    data = entry["modes"].get(mode, {})
    pct = entry["component_pct"]
    split = " / ".join(f"{pct[p]:.1f}" for p in ("encoder", "fusion", "veg", "decoder"))
    if "error" in data or not data:
        timing = [f"failed: {data.get('error', 'not measured')[:80]}", "", ""]
    else:
        tp = data["throughput"]
        timing = [_fmt(data["latency_ms"], 1), f"{_fmt(tp['samples_per_s'], 2)} (b={tp['batch']})",
                  _fmt(data["peak_mb"], 1)]
    return [DECODERS[entry["kv"]], _fmt(entry["params"]["total"] / 1e6, 2),
            _fmt(entry["gflops"]["total"], 2), *timing, split]


def table_rows(row: dict[str, Any]) -> list[str]:
    """One line per decoder and mode of one (preset, device), plus a VIPA / classic line."""
    lines = []
    where = f"{row['device']} {row['precision']}"
    for mode, r in row["ratios"].items():
        for i, entry in enumerate(row["models"].values()):
            lead = [row["preset"], where, mode] if i == 0 else ["", "", ""]
            lines.append("| " + " | ".join([*lead, *_model_cells(entry, mode)]) + " |")
        lines.append("| | | | **VIPA / classic** | " + " | ".join([
            _fmt(r["params"], 3, "x"), _fmt(r["gflops"], 3, "x"), _fmt(r["latency"], 3, "x"),
            _fmt(r["throughput"], 3, "x"), _fmt(r["peak_mb"], 3, "x"), ""]) + " |")
    return lines


def plan_notes(row: dict[str, Any]) -> list[str]:
    """How one (preset, device) was measured, and the compile times when there are any."""
    plan = row["plan"]
    notes = [
        f"- {row['preset']} on {row['device']} ({row['image_size']} px): median of "
        f"{plan['runs']} runs after {plan['warmup']} warm-up call(s), batch sizes "
        f"{'/'.join(map(str, plan['batch_sizes']))}, component split from "
        f"{plan['component_runs']} round(s) ({plan['reason']})."
        + (f" {row['note']}." if row.get("note") else "")]
    for kv, entry in row["models"].items():
        compiled = entry["modes"].get("compiled", {})
        if compiled.get("first_call_ms"):
            notes.append(f"  - {DECODERS[kv]}: first compiled call (compiling) "
                         f"{compiled['first_call_ms'] / 1000:.1f} s, latency speed-up "
                         f"{_fmt(compiled.get('latency_speedup_vs_eager'), 2, 'x')}")
    return notes


def cold_start_table(colds: list[dict[str, Any]]) -> list[str]:
    """The cold starts of ``vipa`` commands (fresh processes), one line per device."""
    lines = ["| cold start, median s | device | checkpoint MB | `vipa --help` | `vipa predict` "
             "(checkpoint, cached trace) | first `vipa predict` (traces) | `vipa predict` "
             "(`VIPA_TRACE_CACHE=off`) | `vipa predict --model model.onnx` (cached graph) "
             "| first `vipa predict --model` (optimizes) | `vipa predict --model` "
             "(`VIPA_TRACE_CACHE=off`) | imports alone | runs |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cold in colds:
        if "error" in cold:
            lines.append(f"| {cold['preset']} | {cold['device']} | failed: "
                         f"{cold['error'][:100]} | | | | | | | | | |")
            continue
        lines.append(f"| {cold['preset']} preset, random weights | {cold['device']} | "
                     f"{cold['checkpoint_mb']:.1f} | {cold['help_median_s']:.2f} | "
                     f"{cold['median_s']:.2f} | {cold['first_predict_s']:.2f} | "
                     f"{cold['pytorch_median_s']:.2f} | {cold['onnx_median_s']:.2f} | "
                     f"{cold['first_onnx_s']:.2f} | "
                     f"{cold['onnx_uncached_median_s']:.2f} | "
                     f"{cold['imports_median_s']:.2f} | {cold['runs']} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a machine line, one table, the plans, the cold start."""
    lines = [machine_line(report["machine"]), "", *HEADER]
    notes = []
    for row in report["results"]:
        lines += table_rows(row)
        notes += plan_notes(row)
    methods = sorted({f"{r['device']}: {r['memory_method']}" for r in report["results"]})
    lines += ["", "Plans:", *notes, "", "Peak memory: " + "; ".join(methods) + "."]
    if report.get("cold_start"):
        lines += ["", *cold_start_table(report["cold_start"])]
    return "\n".join(lines) + "\n"
