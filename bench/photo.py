"""Phone-sized photos: ``vipa predict`` on a 12 MP photo against a 0.24 MP one, time and memory.

Each prediction is a fresh ``vipa predict`` process (one phrase, overlay and
mask written, the checkpoint's fast-start copy made beforehand), run
round-robin ``runs`` times per photo; the report gives the median wall time and
the largest peak resident memory of each, and their ratio (the target: the
12 MP photo within 1.5x of the small one, time and memory).

    python -m bench.photo --checkpoint runs/<run>/best.safetensors [--runs 3]

The photo is scikit-image's ``coffee`` (600 x 400), and the same photo resized
to 4000 x 3000 and saved as a JPEG, as a phone writes it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.coldstart import vipa_command

SIZES = {"small": (600, 400), "phone": (4000, 3000)}
PHRASE = "the cup on the left"


def write_photos(folder: Path) -> dict[str, Path]:
    """coffee.jpg at 600 x 400 and at 4000 x 3000 (JPEG quality 90)."""
    from PIL import Image
    from skimage import data

    coffee = Image.fromarray(data.coffee())
    paths = {}
    for name, size in SIZES.items():
        paths[name] = folder / f"coffee-{size[0]}x{size[1]}.jpg"
        coffee.resize(size, Image.Resampling.BICUBIC).save(paths[name], quality=90)
    return paths


def run_once(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of one child process: call it in a
    process that has no other child, since ``ru_maxrss`` is the largest child's."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def measure(checkpoint: Path, runs: int, device: str) -> dict[str, Any]:
    """Median time and peak memory of ``vipa predict`` per photo size."""
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        photos = write_photos(folder)
        commands = {name: [*vipa_command(), "predict", str(path), PHRASE, "--checkpoint",
                           str(checkpoint), "--output", str(folder / name), "--device", device]
                    for name, path in photos.items()}
        subprocess.run(commands["small"], check=True, capture_output=True)  # fast-start copy
        times: dict[str, list[float]] = {name: [] for name in commands}
        peaks: dict[str, int] = {}
        for _ in range(runs):
            for name in commands:
                seconds, peak = _isolated(commands[name])
                times[name].append(seconds)
                peaks[name] = max(peaks.get(name, 0), peak)
    rows = {name: {"pixels": SIZES[name][0] * SIZES[name][1],
                   "median_s": statistics.median(times[name]), "times_s": times[name],
                   "peak_rss_mb": peaks[name] / 2**20} for name in commands}
    return {"checkpoint": str(checkpoint), "device": device, "runs": runs, "rows": rows,
            "time_ratio": rows["phone"]["median_s"] / rows["small"]["median_s"],
            "memory_ratio": rows["phone"]["peak_rss_mb"] / rows["small"]["peak_rss_mb"]}


def _isolated(command: list[str]) -> tuple[float, int]:
    """:func:`run_once` inside a fresh Python, so each child's peak memory is its own."""
    code = ("import json, sys; from bench.photo import run_once; "
            "print(json.dumps(run_once(json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(command)], check=True,
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    seconds, peak = json.loads(done.stdout)
    return float(seconds), int(peak)


def report(result: dict[str, Any]) -> str:
    lines = ["| photo | pixels | median s | peak RSS MB |", "| --- | ---: | ---: | ---: |"]
    for name, row in result["rows"].items():
        width, height = SIZES[name]
        lines.append(f"| {width} x {height} | {row['pixels']:,} | {row['median_s']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} |")
    lines.append(f"\n12 MP / 0.24 MP: time {result['time_ratio']:.2f}x, peak memory "
                 f"{result['memory_ratio']:.2f}x (target <= 1.5x each).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results/photo-cpu"))
    args = parser.parse_args(argv)
    result = measure(args.checkpoint, args.runs, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
