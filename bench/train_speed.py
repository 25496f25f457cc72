"""Training throughput of a recipe and its variants: samples/s of one optimisation step.

Every variant is the recipe's config plus overrides (``name=key=value,...``).
Each gets its model (seeded), optimizer and loss built as ``vipa train``
builds them and one fixed batch of real samples from the configured dataset
at the variant's image size; one step is forward, loss, backward, gradient
clipping and the AdamW update, what the training loop does per batch. Steps
are timed round-robin, every variant once per round, with
``torch.utils.benchmark`` (:func:`bench.speed_timing.median_latency_ms`), so a busy
machine slows all of them alike and the ratios stay fair. The data pipeline
is timed apart: seconds to load one batch through the training DataLoader.

    python -m bench.train_speed --preset cpu --json bench/results/train-speed-cpu.json \\
        --variant "96 px=model.image_size=96" --step-mode channels_last --step-mode compile
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.report import emit, machine_line
from bench.speed_machine import machine_info
from bench.speed_timing import median_latency_ms
from vipa.config import RunConfig, resolve_config
from vipa.data.build import build_dataset, fit_category_head
from vipa.data.dataset import collate
from vipa.model import VipaLoss, build_model
from vipa.training.finetune import freeze
from vipa.training.optim import build_optimizer

# Ways of running the same step beside the default: channels_last (not a config option),
# compile (the model compiled as ``train.compile`` does, without its fixed text padding).
STEP_MODES = ("channels_last", "compile")


def step_call(cfg: RunConfig, mode: str | None = None):  # noqa: ANN201 - zero-arg callable
    """One training step of ``cfg``'s model on a fixed batch of real samples.

    ``mode`` ``channels_last``: model and images in channels-last memory format;
    ``compile``: the model through ``torch.compile`` (inductor), compiled here
    by a first step whose seconds land in ``step.first_call_s``.
    """
    torch.manual_seed(cfg.train.seed)
    dataset = build_dataset(cfg, cfg.data.train_split, train=True)
    cfg = fit_category_head(cfg, dataset)  # as the training session does
    model = build_model(cfg.model).train()
    model.encoder.tokenizer.fit(dataset.texts())  # as the training session does
    batch = collate([dataset[i] for i in range(cfg.train.batch_size)])
    freeze(model, cfg.train.freeze)  # as the training session does: no gradient, no update
    optimizer = build_optimizer(model, cfg)
    loss_fn = VipaLoss(cfg.model.loss)
    ids, mask = model.tokenize(batch["text"])
    images, masks = batch["image"], batch["mask"]
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    elif mode == "compile":
        model.compile()  # in place: parameters and state_dict keys stay the model's

    def step() -> None:
        loss = loss_fn(model(images, ids, mask), masks, batch.get("categories")).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step.first_call_s = None
    if mode == "compile":
        start = time.perf_counter()
        step()
        step.first_call_s = time.perf_counter() - start
    return step


def loader_seconds(cfg: RunConfig, batches: int = 5) -> float:
    """Mean seconds per batch of the training DataLoader (decode, resize, augment, collate)."""
    from torch.utils.data import DataLoader

    dataset = build_dataset(cfg, cfg.data.train_split, train=True)
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True,
                        num_workers=cfg.data.num_workers, collate_fn=collate)
    batches = max(1, min(batches, len(loader) - 1))
    iterator = iter(loader)
    next(iterator)  # workers start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - start) / batches


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    return name.strip(), [o for o in overrides.split(",") if o.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = dict([("recipe", []), *(parse_variant(v) for v in args.variant)])
    configs = {name: resolve_config(args.preset, {}, [*args.set, *sets])
               for name, sets in variants.items()}
    modes = {name: None for name in configs}
    for mode in args.step_mode:  # the recipe's step run another way
        configs[f"recipe, {mode}"], modes[f"recipe, {mode}"] = configs["recipe"], mode
        variants[f"recipe, {mode}"] = []
    calls = {name: step_call(cfg, modes[name]) for name, cfg in configs.items()}
    ms = median_latency_ms(calls, args.warmup, args.runs)
    base = configs["recipe"].train.batch_size / ms["recipe"]
    rows = []
    for name, cfg in configs.items():
        per_s = cfg.train.batch_size / ms[name] * 1000
        first = calls[name].first_call_s
        rows.append({"variant": name, "overrides": variants[name], "step_mode": modes[name],
                     "image_size": cfg.model.image_size, "batch_size": cfg.train.batch_size,
                     "step_ms": round(ms[name], 1), "samples_per_s": round(per_s, 2),
                     "vs_recipe": round(per_s / (base * 1000), 3),
                     "first_call_s": None if first is None else round(first, 1),
                     "loader_s_per_batch": round(loader_seconds(cfg), 4)})
    return {"preset": args.preset, "machine": machine_info([torch.device("cpu")]),
            "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    lines = [machine_line(report["machine"]), "",
             f"Recipe `{report['preset']}`; one optimisation step on a fixed batch of real "
             "samples, median of round-robin `torch.utils.benchmark` samples.", "",
             "| variant | overrides | px | batch | ms / step | samples/s | vs recipe "
             "| DataLoader s / batch |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    compiled = [r for r in report["rows"] if r.get("first_call_s") is not None]
    for r in report["rows"]:
        lines.append(f"| {r['variant']} | {' '.join(r['overrides']) or '-'} | {r['image_size']} "
                     f"| {r['batch_size']} | {r['step_ms']:.0f} | {r['samples_per_s']:.1f} "
                     f"| {r['vs_recipe']:.2f}x | {r['loader_s_per_batch']:.3f} |")
    lines += ["", *(f"{r['variant']}: first step (compiling) {r['first_call_s']:.1f} s"
                    for r in compiled)] if compiled else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME=KEY=VALUE[,KEY=VALUE]", help="a variant to compare")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to the recipe and every variant")
    parser.add_argument("--step-mode", action="append", default=[], choices=STEP_MODES,
                        help="also time the recipe's step this way (repeatable)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = run(args)
    finally:
        torch.set_num_threads(threads)
    emit(report, markdown, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
