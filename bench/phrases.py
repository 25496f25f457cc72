"""Many phrases on one image: cost per phrase against phrases per image, for each fusion.

For every fusion (early, late, none) a model is built from the preset's model
config with random weights (the same seed, so the encoders match) and wrapped
in a :class:`vipa.inference.runtime.TorchRuntime`. For N phrases on one image
two calls are timed side by side, round-robin, with
``torch.utils.benchmark`` (:func:`bench.speed_timing.median_latency_ms`):

- ``shared``: what ``vipa predict``, ``vipa serve`` and ``vipa demo`` run: the
  image once and ``image_index`` pointing every phrase at it. With ``late`` and
  ``none`` fusion the encoder's vision stages then run once for all N phrases.
- ``repeated``: the image repeated N times, one row per phrase (no
  ``image_index``): what every fusion cost before, and what ``early`` fusion
  must still do, since its vision stages see the text.

The table gives ms per phrase for both and the ratio repeated / shared.

    python -m bench.phrases --preset cpu --phrases 1,4,16 --json bench/results/phrases-cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.models import PHRASE, build, model_input, preset_model_config
from bench.report import emit, machine_line
from bench.speed_machine import machine_info
from bench.speed_timing import median_latency_ms, quiet_truncation
from vipa.inference.runtime import TorchRuntime

FUSIONS = ("early", "late", "none")


def calls_for(runtime: TorchRuntime, phrases: int) -> dict[str, Any]:
    """The shared and the repeated call for one image and ``phrases`` phrases."""
    one = model_input(runtime.image_size, 1)
    repeated = np.repeat(one, phrases, axis=0)
    index = np.zeros(phrases, dtype=np.int64)
    ids, mask = runtime.tokenize([PHRASE] * phrases)
    return {"shared": lambda: runtime.run(one, ids, mask, index),
            "repeated": lambda: runtime.run(repeated, ids, mask)}


def bench_fusion(preset: str, fusion: str, phrase_counts: list[int], warmup: int,
                 runs: int, overrides: list[str]) -> list[dict[str, Any]]:
    config = preset_model_config(preset, [*overrides, f"fusion.name={fusion}"])
    runtime = TorchRuntime(build(config, torch.device("cpu")), "cpu")
    rows = []
    for phrases in phrase_counts:
        ms = median_latency_ms(calls_for(runtime, phrases), warmup, runs)
        rows.append({"fusion": fusion, "phrases": phrases,
                     "shared_ms_per_phrase": ms["shared"] / phrases,
                     "repeated_ms_per_phrase": ms["repeated"] / phrases,
                     "speedup": ms["repeated"] / ms["shared"]})
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [machine_line(report["machine"]), "",
             f"Preset `{report['preset']}`, random weights, one image at the model's size; "
             "median of round-robin `torch.utils.benchmark` samples.", "",
             "| fusion | phrases per image | ms per phrase, image shared | ms per phrase, "
             "image repeated | repeated / shared |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in report["rows"]:
        lines.append(f"| {row['fusion']} | {row['phrases']} | {row['shared_ms_per_phrase']:.1f} "
                     f"| {row['repeated_ms_per_phrase']:.1f} | {row['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phrases",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--fusions", default=",".join(FUSIONS))
    parser.add_argument("--phrases", default="1,4,16", help="phrases per image, comma-separated")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override (repeatable), e.g. image_size=64")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    counts = [int(x) for x in args.phrases.split(",")]
    report: dict[str, Any] = {"preset": args.preset, "machine": machine_info([torch.device("cpu")]),
                              "rows": []}
    with quiet_truncation(), torch.inference_mode():
        for fusion in args.fusions.split(","):
            report["rows"] += bench_fusion(args.preset, fusion, counts, args.warmup, args.runs,
                                           args.set)
    emit(report, markdown, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
