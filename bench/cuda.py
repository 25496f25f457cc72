"""One prepared CUDA check: what vipa does on a GPU, measured in one command of minutes.

Sections (``--only`` picks some): ``machine`` (card, driver, versions, bf16
matrix ceiling), ``tests`` (tests/test_device.py on the device), ``recipe``
(the ``cpu`` recipe for 300 steps in fp32 and bf16, loss curves beside the CPU
reference), ``paper_train`` (the paper preset, random weights, 30 bf16 steps at
batch 8: step time, data wait, peak memory; the largest batch that fits),
``fast_train`` (the paper preset's step today, with static text shapes and
compiled, at batch 8 and 32: images/s, training MFU, LAVT-epoch minutes),
``inference`` (eager fp32 / bf16 / compiled bf16, VIPA vs classic, MFU,
profile), ``onnx`` (export, parity on onnxruntime's CUDA provider where there
is one), ``ddp`` (``torchrun --nproc-per-node 1``, NCCL) and ``data`` (the
training DataLoader's images/s at the paper preset's settings).

Each section checks a deadline (``--budget``) before it starts more work, and
the JSON report is rewritten after every section, so a run cut short keeps
what it measured. ``--dry-run`` runs the same code on the CPU with tiny sizes
(a test does, so the script works before a GPU appears). On a lent GPU
machine ``bash bench/cuda.sh run`` installs vipa there and runs this
(docs/gpu.md).

    python -m bench.cuda --json out/cuda.json --markdown out/cuda.md --plot out/loss.png
    python -m bench.cuda --dry-run
    python -m bench.cuda --device cpu --only recipe --json bench/results/cuda-recipe-cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from bench import cuda_sections, cuda_training
from bench.cuda_inference import compiled, inference
from bench.cuda_plan import DRY, GPU, SECTIONS, Context, Sizes
from bench.cuda_report import markdown, plot_curves
from bench.report import emit
from bench.speed_machine import one_line
from vipa.data.synthetic import generate_synthetic

RUNNERS = {"machine": cuda_sections.machine, "tests": cuda_sections.tests,
           "recipe": cuda_sections.recipe, "paper_train": cuda_training.paper_train,
           "fast_train": cuda_training.fast_train,
           "data": cuda_sections.data, "onnx": cuda_sections.onnx, "ddp": cuda_sections.ddp,
           "inference": inference, "compile": compiled}
REFERENCE = Path(__file__).parent / "results" / "cuda-recipe-cpu.json"


def run_sections(ctx: Context, names: list[str], report: dict[str, Any],
                 json_path: Path | None) -> None:
    """Run each section in order; an error is recorded and the next section still runs."""
    for name in names:
        print(f"[cuda] {name} ({ctx.remaining():.0f} s left) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        if ctx.remaining() <= 0:
            result: dict[str, Any] = {"skipped": "time budget"}
        else:
            try:
                result = RUNNERS[name](ctx)
            except Exception as error:  # every failure is a finding of the check
                result = {"error": one_line(error),
                          "traceback": traceback.format_exc().strip().splitlines()[-12:]}
                print(f"[cuda] {name} failed: {result['error']}", file=sys.stderr, flush=True)
        result["section_s"] = round(time.perf_counter() - start, 1)
        ctx.results[name] = report["sections"][name] = result
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2) + "\n")


def failures(report: dict[str, Any]) -> list[str]:
    """Sections that raised, and a device test run that did not pass."""
    bad = [name for name, result in report["sections"].items() if "error" in result]
    tests = report["sections"].get("tests", {})
    if tests.get("returncode"):
        bad.append("tests")
    ddp = report["sections"].get("ddp", {})
    if ddp.get("returncode"):
        bad.append("ddp")
    return bad


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = DRY if args.dry_run else GPU
    if args.device:
        sizes = replace(sizes, device=args.device)
    if args.budget:
        sizes = replace(sizes, budget_s=args.budget)
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.cuda",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code on the CPU with tiny sizes, in seconds")
    parser.add_argument("--device", default=None, help="default cuda (cpu for --dry-run)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections (default all: {', '.join(SECTIONS)})")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds before sections stop starting work (default 330)")
    parser.add_argument("--reference", type=Path, default=REFERENCE,
                        help="a CPU run of the recipe section (JSON) to set beside the curves")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown here")
    parser.add_argument("--plot", type=Path, default=None, help="write the loss curves here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the sections; print the markdown; exit 1 when a section failed."""
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    sizes = sizes_from(args)
    if sizes.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is available (use --dry-run or --device cpu)")
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": args.dry_run, "sizes": asdict(sizes), "sections": {},
        "reference": _reference(args.reference, sizes)}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vipa-bench-cuda-") as scratch:
        ctx = Context(sizes, torch.device(sizes.device), Path(scratch), start + sizes.budget_s)
        if sizes.tiny_data:
            ctx.data_root = generate_synthetic(Path(scratch) / "synth", seed=0, n_train=16,
                                               n_val=4, n_test=2, image_size=64)
        run_sections(ctx, names, report, args.json)
    report["wall_s"] = round(time.monotonic() - start, 1)
    if args.plot is not None:
        plot_curves(report, args.plot)
    emit(report, markdown, args.json, args.markdown)
    bad = failures(report)
    if bad:
        print(f"[cuda] failed: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


def _reference(path: Path | None, sizes: Sizes) -> dict[str, Any] | None:
    """The fp32 run of a saved CPU recipe report with the same step count, if there is one."""
    if path is None or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    recipe = saved.get("sections", {}).get("recipe", {})
    if recipe.get("steps") != sizes.recipe_steps or "off" not in recipe.get("runs", {}):
        return None
    return recipe["runs"]["off"]


if __name__ == "__main__":
    sys.exit(main())
