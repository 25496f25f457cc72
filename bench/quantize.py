"""fp32 against int8 ONNX on the CPU: file size, latency per image, mask agreement.

The checkpoint is exported twice as ``vipa export`` does (``--quantize int8``
for the second, which also checks mask agreement); both files then run
through the runtime ``vipa predict --model`` uses, one image and one phrase
per call, timed round-robin side by side (:func:`bench.speed_timing.median_latency_ms`),
so a busy machine slows both alike. Agreement is the mean mask IoU of each
file's masks with fp32 PyTorch's on rendered scenes of the built-in set
(:mod:`vipa.inference.quantize`).

    python -m bench.quantize --checkpoint runs/x/best.safetensors \\
        --json bench/results/quantize-cpu.json --markdown bench/results/quantize-cpu.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.report import machine_line, run_and_emit
from bench.speed_machine import machine_info
from bench.speed_timing import median_latency_ms
from vipa.checkpoint import load_model
from vipa.inference.export import Exportable, export_model
from vipa.inference.quantize import CHECK_PHRASES, check_images, mask_agreement
from vipa.inference.runtime import load_exported


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, _ = load_model(args.checkpoint, "cpu")
    folder = Path(tempfile.mkdtemp(prefix="vipa-quantize-"))
    files = {"fp32": folder / "fp32.onnx", "int8": folder / "int8.onnx"}
    export_model(model, files["fp32"], "onnx")
    export_model(model, files["int8"], "onnx", quantize="int8")
    wrapper = Exportable(model).eval()
    image = check_images(model.config.image_size, 1)
    ids, mask = model.tokenize([CHECK_PHRASES[0]])
    runtimes = {name: load_exported(path, "cpu") for name, path in files.items()}
    calls = {name: (lambda r=r: r.run(image, ids.numpy(), mask.numpy()))
             for name, r in runtimes.items()}
    ms = median_latency_ms(calls, args.warmup, args.runs)
    rows = [{"model": name, "megabytes": round(path.stat().st_size / 2**20, 2),
             "ms_per_image": round(ms[name], 2),
             "mask_iou_vs_fp32_pytorch": round(mask_agreement(wrapper, path, 0.5), 4)}
            for name, path in files.items()]
    return {"checkpoint": str(args.checkpoint), "image_size": model.config.image_size,
            "machine": machine_info([torch.device("cpu")]), "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    lines = [machine_line(report["machine"]), "",
             f"`{report['checkpoint']}` at {report['image_size']} px; one image and one "
             "phrase per call through onnxruntime (CPU), median of round-robin samples; mask "
             f"IoU against fp32 PyTorch on {len(CHECK_PHRASES)} rendered scenes.", "",
             "| model | MB | ms / image | mask IoU vs fp32 PyTorch |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['megabytes']:.1f} | {r['ms_per_image']:.1f} "
              f"| {r['mask_iou_vs_fp32_pytorch']:.3f} |" for r in report["rows"]]
    fp32, int8 = report["rows"]
    lines += ["", f"int8 / fp32: size {int8['megabytes'] / fp32['megabytes']:.2f}x, "
                  f"latency {int8['ms_per_image'] / fp32['ms_per_image']:.2f}x"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    return run_and_emit(parser, run, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
