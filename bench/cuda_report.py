"""Markdown and loss-curve plot of a ``python -m bench.cuda`` report (its section in results)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

CURVE_STEPS = (10, 50, 100, 200, 300)


def markdown(report: dict[str, Any]) -> str:
    """The report as a docs/results.md section: one block per section, errors named."""
    s = report["sections"]
    lines = [f"Run {report['date']}{' (dry run: CPU, tiny sizes)' if report['dry_run'] else ''}"
             f", {report['wall_s']:.0f} s in all.", ""]
    renderers = {"machine": _machine, "tests": _tests, "recipe": _recipe,
                 "paper_train": _paper_train, "inference": _inference, "onnx": _onnx,
                 "ddp": _ddp, "data": _data, "compile": _compile, "fast_train": _fast_train}
    for name, render in renderers.items():
        if name not in s:
            continue
        lines.append(f"**{name}** ({s[name].get('section_s', 0):.0f} s)")
        if "error" in s[name]:
            lines += [f"- failed: `{s[name]['error']}`", *(f"  - `{t.strip()}`"
                                                             for t in s[name]["traceback"][-4:])]
        elif "skipped" in s[name]:
            lines.append(f"- skipped: {s[name]['skipped']}")
        else:
            lines += render(s[name], report)
        lines.append("")
    return "\n".join(lines)


def _machine(m: dict[str, Any], _: dict) -> list[str]:
    p = m.get("packages", {})
    card = (f"{m['card']} (compute capability {m['capability']}, {m['multiprocessors']} SMs, "
            f"{m['memory_gib']} GiB), driver {m.get('driver')}, cuDNN {m.get('cudnn')}, "
            f"NCCL {m.get('nccl')}" if "card" in m else f"CPU only: {m['cpu']}")
    return [f"- {card}",
            f"- torch {m['torch']} (CUDA {m.get('torch_cuda')}), torchvision "
            f"{p.get('torchvision')}, timm {p.get('timm')}, transformers {p.get('transformers')}"
            f", onnxruntime {p.get('onnxruntime')}, Python {m['python']}; {m['cpu_count']} "
            "CPU cores",
            f"- bf16 matrix product ({'8192' if 'card' in m else 'small'}^3, random data): "
            f"{m['bf16_matmul_tflops_measured']} TFLOP/s measured; datasheet dense bf16 peak "
            f"{m.get('bf16_peak_tflops_datasheet')} TFLOP/s"]


def _tests(t: dict[str, Any], _: dict) -> list[str]:
    out = [f"- `{t['command']}`: {t['summary']} (exit {t['returncode']}, {t['seconds']} s)"]
    return out + [f"  - {line}" for line in t["failures"]]


def _recipe(r: dict[str, Any], report: dict[str, Any]) -> list[str]:
    runs = dict(r["runs"])
    reference = report.get("reference")
    if reference:
        runs = {"CPU fp32 (reference)": reference, **{f"{r['device']} {_amp(k)}": v
                                                      for k, v in runs.items()}}
    header = "| run | " + " | ".join(f"loss @ {s}" for s in CURVE_STEPS) + \
        " | wall s | samples/s | val oIoU |"
    lines = [f"- `cpu` recipe, {r['steps']} steps, seed 0", "", header,
             "| --- |" + " ---: |" * (len(CURVE_STEPS) + 3)]
    for name, run in runs.items():
        at = dict((step, loss) for step, loss in run["curve"])
        cells = [_num(at.get(step), 4) for step in CURVE_STEPS]
        lines.append(f"| {name} | {' | '.join(cells)} | {run['wall_s']} | "
                     f"{run['samples_per_s']} | {run['final_val_oIoU']} |")
    return lines


def _paper_train(p: dict[str, Any], _: dict) -> list[str]:
    lines = [f"- paper preset, random weights ({p['params_m']} M parameters), {p['image_size']} "
             f"px, {p['amp']}, batch {p['batch_size']}, {p['num_workers']} loader workers: "
             f"median step {p['step_ms_median']} ms (mean {p['step_ms_mean']} ms incl. data "
             f"wait {p['data_wait_ms_mean']} ms = **{p['data_wait_pct']} %**), "
             f"{p['images_per_s']} images/s, peak memory {p.get('peak_memory_gib')} GiB; "
             f"first step {p['first_step_s']} s, setup {p['setup_s']} s",
             "- batch ladder (the batch repeated, one timed step each): " + "; ".join(
                 f"{row['batch']}: " + (f"{row['step_ms']} ms, {row['images_per_s']} images/s, "
                                        f"{row.get('peak_memory_gib')} GiB"
                                        if "step_ms" in row else row.get("error")
                                        or row.get("skipped", "")) for row in p["ladder"]),
             f"- largest batch that fitted: {p['largest_batch']}"]
    return lines


def _fast_train(f: dict[str, Any], _: dict) -> list[str]:
    """Today's step beside the fast path: one table row per batch size and arm."""
    lines = [f"- paper preset, bf16, one sync per timed loop; forward "
             f"{f['forward_gflops_per_image']} GFLOPs per image, training MFU (3x forward) "
             f"against {f['peak_tflops']} TFLOP/s", "",
             "| batch | arm | warm-up s | ms / step | images/s | training MFU % | LAVT epoch min |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in f["rows"]:
        if "images_per_s" not in row:
            reason = row.get("error") or row.get("skipped")
            lines.append(f"| {row['batch']} | {row['arm']} | {reason} | | | | |")
            continue
        lines.append(f"| {row['batch']} | {row['arm']} | {row['warmup_s']} | {row['step_ms']} | "
                     f"{row['images_per_s']} | {row.get('train_mfu_pct', '')} | "
                     f"{row['lavt_epoch_min']} |")
    return [*lines, ""]


def _inference(i: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """Eager rows and (from the compile section) the compiled rows in one table."""
    rows = [*i["rows"], *report["sections"].get("compile", {}).get("rows", [])]
    rate = {(r["kv"], r["mode"], r["batch"]): r for r in rows}
    lines = [f"- paper preset, {i['image_size']} px, random weights; GFLOPs per image: "
             f"VIPA {i['gflops_per_image']['visual']}, classic {i['gflops_per_image']['language']}"
             f"; MFU against {i['peak_tflops']} TFLOP/s", "",
             "| mode | batch | VIPA images/s | classic images/s | VIPA / classic | VIPA MFU % "
             "| classic MFU % | compile s (VIPA) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    keys = sorted({(r["mode"], r["batch"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for mode, batch in keys:
        v, c = rate.get(("visual", mode, batch), {}), rate.get(("language", mode, batch), {})
        ratio = (v.get("images_per_s") or 0) / c["images_per_s"] if c.get("images_per_s") \
            else None
        lines.append(f"| {mode} | {batch} | {_cell(v)} | {_cell(c)} | {_num(ratio, 3)} | "
                     f"{_num(v.get('mfu_pct'), 1)} | {_num(c.get('mfu_pct'), 1)} | "
                     f"{_num(v.get('first_call_s'), 1)} |")
    attention = "; ".join(f"batch {r['batch']}: {r['sdpa_over_timm']}x"
                          for r in i.get("sdpa_over_timm", []))
    if attention:  # eager bf16 VIPA, Swin window attention through SDPA over timm's
        lines += ["", f"- window attention through SDPA over timm's (eager bf16): {attention}"]
    return lines + ["", *_profile(i["profile"], "eager bf16")]


def _compile(c: dict[str, Any], _: dict) -> list[str]:
    names = {"visual": "VIPA", "language": "classic"}
    lines = ["- first compiled call (compiling), batch: " + "; ".join(
        f"{names[r['kv']]} {r['batch']}: " + (f"{r['first_call_s']} s" if "first_call_s" in r
                                             else r.get("error") or r.get("skipped", ""))
        for r in c["rows"]) + " (rows in the inference table)"]
    return lines + (["", *_profile(c["profile"], "compiled bf16")] if "profile" in c else [])


def _cell(row: dict[str, Any]) -> str:
    return row.get("error") or row.get("skipped") or _num(row.get("images_per_s"), 1)


def _profile(p: dict[str, Any], mode: str) -> list[str]:
    parts = p.get("parts_ms", {})
    lines = [f"- profile, VIPA {mode} at batch {p['batch']}: {p['wall_ms']} ms per forward, "
             f"device busy {p['device_busy_pct']} % of it, {p['ops_per_forward']} kernels "
             "(ops on the CPU); "
             + ("parts ms " + ", ".join(f"{k} {v}" for k, v in parts.items()) if parts else ""),
             "", "| op (self time, top 15) | ms / forward | % | calls |",
             "| --- | ---: | ---: | ---: |"]
    return lines + [f"| `{t['name']}` | {t['ms']} | {t['pct']} | {t['calls']} |"
                    for t in p["top"]]


def _onnx(o: dict[str, Any], _: dict) -> list[str]:
    cuda = o.get("cuda") or f"max abs diff on CUDA {o.get('cuda_max_abs_diff'):.3g}"
    return [f"- export + CPU verification {o['export_and_cpu_verify_s']} s, max abs diff "
            f"{_num(o['cpu_max_abs_diff'], 7)}; providers {', '.join(o['providers'])}; {cuda}"]


def _ddp(d: dict[str, Any], _: dict) -> list[str]:
    return [f"- `{d['command']}`: exit {d['returncode']}, backend {d['backend']}, ranks agree "
            f"{d['ranks_agree']}, {d['seconds']} s",
            *(f"  - `{t.strip()[:200]}`" for t in d.get("errors", [])[:6])]


def _data(d: dict[str, Any], report: dict[str, Any]) -> list[str]:
    rows = [r for r in d["rows"] if "images_per_s" in r]
    lines = [f"- {d['dataset']}, {d['image_size']} px, batch {d['batch_size']}, preset "
             f"workers {d['preset_workers']}: " + "; ".join(
                 f"{r['workers']} workers {r['images_per_s']} images/s (first batch "
                 f"{r['first_batch_s']} s)" for r in rows)]
    train = report["sections"].get("paper_train", {})
    single = next((r for r in rows if r["workers"] == 0), None)
    if single and train.get("images_per_s"):
        need = math.ceil(train["images_per_s"] / single["images_per_s"])
        lines.append(f"- the batch-8 step consumes {train['images_per_s']} images/s: "
                     f"{need} worker(s) at the single-process rate")
    return lines


def _amp(amp: str) -> str:
    return "fp32" if amp == "off" else amp


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plot_curves(report: dict[str, Any], path: Path) -> Path | None:
    """Loss against step of every recipe run (and the CPU reference) as a PNG."""
    recipe = report["sections"].get("recipe", {})
    if "runs" not in recipe:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    runs = {f"{recipe['device']} {_amp(amp)}": run for amp, run in recipe["runs"].items()}
    if report.get("reference"):
        runs = {"CPU fp32 (reference)": report["reference"], **runs}
    for name, run in runs.items():
        steps, losses = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
        ax.plot(steps, losses, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean of 10 steps)")
    ax.set_title(f"cpu recipe, seed 0, {recipe['steps']} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
