"""Per-component cost of a VIPA model: parameters, FLOPs and forward time.

Splits one forward pass into encoder (text + unimodal vision), fusion (the
fusion call minus the unimodal vision pass it contains), VEG and decoder, by
running each part as its own timed sub-call; times are medians over ``--runs``
rounds (every part timed once per round) after ``--warmup`` rounds. The helpers
(round-robin timer, FLOP counter, per-part split) are shared with
:mod:`bench.speed`.

    python -m bench.components --encoder tiny --preset micro
    python -m bench.components --encoder swin-bert --preset tiny,base --image-size 480 \\
        --device cuda --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vipa.config import ModelConfig, apply_overrides
from vipa.model import build_model

PARTS = ("encoder", "fusion", "veg", "decoder")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer stops when the work is done, not when it is queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(calls: dict[str, Callable[[], object]], device: torch.device, warmup: int,
              runs: int) -> dict[str, float]:
    """Median ms per call, timed round-robin so a busy machine slows every part alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch's dispatcher (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_params(module: torch.nn.Module) -> int:
    """Parameter count of a module."""
    return sum(p.numel() for p in module.parameters())


def part_params(model: torch.nn.Module) -> dict[str, int]:
    """Parameters of each part of a VIPA model, plus the total."""
    params = {part: count_params(getattr(model, part)) for part in PARTS}
    params["total"] = count_params(model)
    return params


def component_calls(model: torch.nn.Module, images: torch.Tensor, ids: torch.Tensor,
                    mask: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One call per sub-step of a forward pass, fed the inputs the full pass would give it.

    Call (and build) under ``torch.no_grad`` or ``torch.inference_mode``. The
    fusion call contains the unimodal vision pass, so :func:`split_parts`
    subtracts it.
    """
    size = (images.shape[-2], images.shape[-1])
    text_features = model.encoder.encode_text(ids, mask)
    features = model.fusion(model.encoder, images, text_features)
    veg = model.expression(features, text_features)
    return {
        "text": lambda: model.encoder.encode_text(ids, mask),
        "vision": lambda: model.encoder.forward_features(images),
        "fusion+vision": lambda: model.fusion(model.encoder, images, text_features),
        "veg": lambda: model.expression(features, text_features),
        "decoder": lambda: model.decoder(features, text_features, veg.expression,
                                         veg.expression_mask, size),
        "total": lambda: model(images, ids, mask),
    }


def split_parts(values: dict[str, float]) -> dict[str, float]:
    """Per-call numbers of :func:`component_calls` -> encoder / fusion / VEG / decoder / total."""
    return {
        "encoder": values["text"] + values["vision"],
        "fusion": max(values["fusion+vision"] - values["vision"], 0),
        "veg": values["veg"],
        "decoder": values["decoder"],
        "total": values["total"],
    }


def measure(config: ModelConfig, *, batch: int, device: torch.device, warmup: int,
            runs: int, text: str) -> dict:
    """Numbers for one model config."""
    torch.manual_seed(0)
    model = build_model(config).to(device).eval()
    size = config.image_size
    images = torch.rand(batch, 3, size, size, device=device)
    ids, mask = model.tokenize([text] * batch)
    ids, mask = ids.to(device), mask.to(device)

    with torch.no_grad():
        calls = component_calls(model, images, ids, mask)
        ms = median_ms(calls, device, warmup, runs)
        flops = {name: count_flops(fn) for name, fn in calls.items()}

    return {
        "encoder": config.encoder.name,
        "preset": config.encoder.preset,
        "fusion": config.fusion.name,
        "kv": config.decoder.kv,
        "image_size": size,
        "batch": batch,
        "device": str(device),
        "params": part_params(model),
        "gflops": {k: round(v / 1e9, 4) for k, v in split_parts(flops).items()},
        "ms": {k: round(v, 3) for k, v in split_parts(ms).items()},
    }


def _table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        lines.append(f"{row['encoder']} preset={row['preset']} fusion={row['fusion']} "
                     f"kv={row['kv']} image={row['image_size']} batch={row['batch']} "
                     f"device={row['device']}")
        lines.append(f"  {'part':<8} {'params':>12} {'GFLOPs':>10} {'ms':>10} {'time %':>7}")
        total_ms = row["ms"]["total"] or 1.0
        for part in (*PARTS, "total"):
            lines.append(f"  {part:<8} {row['params'][part]:>12,} {row['gflops'][part]:>10.3f} "
                         f"{row['ms'][part]:>10.2f} {100 * row['ms'][part] / total_ms:>6.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.components",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--preset", default="micro",
                        help="comma-separated presets; 'default' = the encoder's default")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fusion", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--text", default="the red circle on the left")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra model config overrides, e.g. decoder.kv=language")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    rows = []
    for preset in args.preset.split(","):
        overrides = [f"encoder.name={args.encoder}", *args.set]
        if preset != "default":
            overrides.append(f"encoder.preset={preset}")
        if args.image_size:
            overrides.append(f"image_size={args.image_size}")
        if args.fusion:
            overrides.append(f"fusion.name={args.fusion}")
        config = apply_overrides(ModelConfig(), overrides)
        rows.append(measure(config, batch=args.batch, device=device, warmup=args.warmup,
                            runs=args.runs, text=args.text))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
