"""Speed and cost of what ``vipa predict`` runs, per preset and device: VIPA vs classic decoder.

For every preset (``vipa/config/presets``) and device, two models are built
from the preset's model config with random weights and the same encoder: VIPA
(``decoder.kv=visual``) and the classic decoder (``decoder.kv=language``).

What is timed: the call ``vipa predict`` makes for one image
(:func:`vipa.inference.predict.segment`), on a
:class:`vipa.inference.runtime.TorchRuntime` around each model:
``runtime.run(images, *runtime.tokenize(texts))``, i.e. tokenizing, numpy to
tensors, the forward pass under ``torch.inference_mode`` and the logits and
relevance back to numpy. The input is a synthetic uint8 image already at the
model's input size, put through :func:`vipa.inference.masks.preprocess` once
(outside the timer) and repeated ``batch`` times with one phrase each, as
``segment`` repeats an image per phrase; resizing the probabilities back to the
image is not timed, and the tokenizer's warning about a cut phrase (a
random-weight vocabulary splits it finely) is silenced while timing. On CUDA
the call runs under bf16 autocast, what a GPU deployment would use (``vipa
predict`` itself runs fp32); the CPU runs fp32.

How: every sample is one ``torch.utils.benchmark.Timer.timeit(number=1)`` (the
Timer synchronizes CUDA before it reads the clock, runs with this process's
torch threads, and makes two untimed calls right before the timed one).
Samples are taken round-robin, every model once per round, so a busy machine
slows both models alike and the VIPA / classic ratios stay fair; the two
untimed calls re-warm the caches the other model just used. Latency is the
median over rounds (``Measurement.merge(...).median``). Before the first round
every model gets the plan's warm-up calls, the first (compiling) one included.

Measured per model: latency at batch 1 and throughput at the best batch size
tried, peak memory of one call (:mod:`bench.memory`), parameters, GFLOPs and the
encoder / fusion / VEG / decoder time split (:mod:`bench.components`, forward
passes on tensors). Separately: the cold start of ``vipa predict`` as a whole
process (:mod:`bench.coldstart`). The markdown is written by :mod:`bench.report`.
This module is the command line; the machine facts are in :mod:`bench.speed_machine`,
the timing in :mod:`bench.speed_timing` and one (preset, device) in
:mod:`bench.speed_preset`.

On the CPU a model whose first batch-1 call takes more than 1 s (the ``paper``
preset: Swin-B + BERT-base at 480 px) gets a reduced plan (5 runs, batch 1
only, 3 component rounds) so the default run ends in minutes; ``--runs``,
``--warmup``, ``--batch-sizes`` and ``--component-runs`` override every plan.
The plan each row used is in the output.

    python -m bench.speed                                 # cpu,paper on cpu (+ cuda if present)
    python -m bench.speed --presets cpu --device cuda --compile --json speed.json
    python -m bench.speed --presets cpu,paper --threads 1 --json bench/results/speed-cpu.json \\
        --markdown bench/results/speed-cpu.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from bench.coldstart import cold_start
from bench.report import emit, markdown
from bench.speed_machine import machine_info, resolve_devices
from bench.speed_preset import bench_preset


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("batch sizes are positive integers, e.g. 1,2,4")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``python -m bench.speed``."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="cpu,paper",
                        help="comma-separated presets (names or YAML files)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, auto or a comma list (default: cpu, plus cuda if present)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per batch size (default 10; 5 for a slow CPU model)")
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
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole report: machine, every (preset, device), then the cold starts."""
    devices = resolve_devices(args.device)
    report: dict[str, Any] = {"machine": machine_info(devices), "results": [], "cold_start": []}
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        for device in devices:
            print(f"[speed] {preset} on {device} ...", file=sys.stderr, flush=True)
            report["results"].append(bench_preset(preset, device, args))
    if not args.skip_cold_start:
        for device in devices:
            print(f"[speed] cold start on {device} ...", file=sys.stderr, flush=True)
            report["cold_start"].append(cold_start(args.cold_start_preset, device,
                                                   args.cold_start_runs, args.set, args.threads))
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown table; write JSON / markdown when asked."""
    args = build_parser().parse_args(argv)
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run(args)
    finally:
        torch.set_num_threads(threads_before)
    emit(report, markdown, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
