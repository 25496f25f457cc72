"""Cold start of ``vipa`` commands as fresh processes: help, predict, ONNX predict, imports.

A checkpoint of the preset (random weights) is written with
:func:`vipa.checkpoint.save_checkpoint`, as training writes it, and exported to
ONNX. These commands then run round-robin, ``runs`` times each, and their wall
times are reported (targets: help < 1 s, predict < 3 s, ONNX predict < 1.5 s
on 2 CPU cores):

- ``vipa --help``;
- ``vipa predict IMAGE "the red circle" --checkpoint CKPT --out OUT --device D``:
  Python start, imports, checkpoint load, one prediction, PNGs written. On the
  CPU this runs the checkpoint's cached trace (:mod:`vipa.inference.traced`),
  made by one untimed-in-the-median first call, whose time is reported apart;
- the same with ``VIPA_TRACE_CACHE=off``: the PyTorch model built from the
  checkpoint (imports the encoder's libraries);
- the same with ``--model model.onnx`` (no torch imported): on the CPU this opens
  the export's cached optimized graph (:mod:`vipa.inference.onnx_cache`), made by
  a first call timed apart; and with ``VIPA_TRACE_CACHE=off`` (ORT optimizes
  the graph in every process);
- ``python -c "import torch, vipa.inference.predict, vipa.inference.runtime, vipa.model"``:
  the imports alone.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.models import build, preset_model_config

IMPORTS = "import torch, vipa.inference.predict, vipa.inference.runtime, vipa.model"


def vipa_command() -> list[str]:
    """The ``vipa`` console script beside this interpreter, else ``python -m vipa_cli``."""
    script = shutil.which("vipa", path=str(Path(sys.executable).parent)) or shutil.which("vipa")
    return [script] if script else [sys.executable, "-m", "vipa_cli"]


def write_test_image(path: Path) -> None:
    """A 320x240 PNG with a red circle and a blue square."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (90, 110, 90))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 70, 120, 150), fill=(220, 30, 30))
    draw.rectangle((190, 60, 280, 170), fill=(40, 60, 210))
    image.save(path)


def _child_env(threads: int | None, cache: Path) -> dict[str, str]:
    env = os.environ.copy()
    env["VIPA_CACHE"] = str(cache)  # a fresh cache: the first predict traces the checkpoint
    env.pop("VIPA_TRACE_CACHE", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def time_commands(commands: dict[str, list[str]], env: dict[str, str],
                  runs: int) -> dict[str, list[float]] | str:
    """Wall seconds of each command, round-robin ``runs`` times; or why one failed."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                return f"{name} exited {done.returncode}: {' '.join(tail)}"
            times[name].append(elapsed)
    return times


def cold_start(preset: str, device: torch.device, runs: int, overrides: list[str],
               threads: int | None) -> dict[str, Any]:
    """Wall time of ``vipa predict`` as a fresh process, and of its imports alone."""
    from vipa.checkpoint import save_checkpoint
    from vipa.inference.export import export_checkpoint

    with tempfile.TemporaryDirectory(prefix="vipa-speed-") as tmp:
        folder = Path(tmp)
        model = build(preset_model_config(preset, overrides), torch.device("cpu"))
        checkpoint = save_checkpoint(folder / "model.safetensors", model)
        del model
        image = folder / "image.png"
        write_test_image(image)
        predict = [*vipa_command(), "predict", str(image), "the red circle", "--checkpoint",
                   str(checkpoint), "--out", str(folder / "out"), "--device", device.type]
        onnx = folder / "model.onnx"
        export_checkpoint(checkpoint, onnx, "onnx")
        env = _child_env(threads, folder / "cache")
        predict_onnx = [*predict[:predict.index("--checkpoint")], "--model", str(onnx),
                        "--out", str(folder / "onnx-out"), "--device", device.type]
        first = time_commands({"predict": predict, "predict_onnx": predict_onnx}, env, 1)
        commands = {"help": [*vipa_command(), "--help"],
                    "imports": [sys.executable, "-c", IMPORTS], "predict": predict,
                    "predict_pytorch": ["env", "VIPA_TRACE_CACHE=off", *predict],
                    "predict_onnx": predict_onnx,
                    "onnx_uncached": ["env", "VIPA_TRACE_CACHE=off", *predict_onnx]}
        times = first if isinstance(first, str) else time_commands(commands, env, runs)
        if isinstance(times, str):
            return {"preset": preset, "device": str(device), "command": predict, "error": times}
        written = sorted(p.name for p in (folder / "out").glob("*.png"))
        size_mb = checkpoint.stat().st_size / 2**20
    return {
        "preset": preset,
        "device": str(device),
        "runs": runs,
        "command": ["vipa", *predict[len(vipa_command()):]],
        "checkpoint_mb": round(size_mb, 1),
        "median_s": round(statistics.median(times["predict"]), 3),
        "times_s": [round(t, 3) for t in times["predict"]],
        "first_predict_s": round(first["predict"][0], 3),
        "pytorch_median_s": round(statistics.median(times["predict_pytorch"]), 3),
        "imports_median_s": round(statistics.median(times["imports"]), 3),
        "help_median_s": round(statistics.median(times["help"]), 3),
        "onnx_median_s": round(statistics.median(times["predict_onnx"]), 3),
        "first_onnx_s": round(first["predict_onnx"][0], 3),
        "onnx_uncached_median_s": round(statistics.median(times["onnx_uncached"]), 3),
        "outputs": written,
    }
