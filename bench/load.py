"""A bounded load test of ``vipa serve`` on loopback, against ``vipa predict`` processes.

A checkpoint of the preset (random weights, as :mod:`bench.coldstart` writes
it) is served by a real ``vipa serve`` process on a free 127.0.0.1 port. For
each concurrency level (default 1, 4, 16, 64) a fixed number of requests (one
photo, one phrase each) is sent by that many concurrent httpx clients; then
the level stops. Per level: throughput, p50 / p95 / p99 latency, and the
status codes (every non-200 counts as failed; 503s, the queue refusing work,
are counted apart). Two servers are measured: ``--max-batch-size 8`` (dynamic
batching) and ``--max-batch-size 1`` (none), so the batching speed-up is a
ratio of two runs side by side.

For comparison, the same requests as ``vipa predict`` processes, one per
request, run one after another (``--sequential`` of them, the slowest way a
script would do it), and as one ``vipa predict --batch`` process over all of
the level's requests.

    python -m bench.load --preset cpu --requests 64 --json bench/results/load-cpu.json \\
        --plot docs/images/load-cpu.png
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.coldstart import vipa_command

PHRASE = "the person on the left"
LEVELS = (1, 4, 16, 64)


def photo_png() -> bytes:
    """scikit-image's astronaut at 256 px, as PNG bytes."""
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((256, 256)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_checkpoint(preset: str, overrides: list[str], folder: Path) -> Path:
    import torch

    from bench.models import build, preset_model_config
    from vipa.checkpoint import save_checkpoint

    model = build(preset_model_config(preset, overrides), torch.device("cpu"))
    return save_checkpoint(folder / "model.safetensors", model)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``vipa serve`` in a subprocess on a free loopback port, up once /health answers."""

    def __init__(self, checkpoint: Path, max_batch: int, env: dict[str, str]) -> None:
        import httpx

        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [*vipa_command(), "serve", "--checkpoint", str(checkpoint), "--port",
             self.url.rsplit(":", 1)[1], "--device", "cpu", "--max-batch-size", str(max_batch),
             "--batch-timeout-ms", "10"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("vipa serve did not come up")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


async def _level(url: str, png: bytes, concurrency: int, requests: int,
                 timeout_s: float) -> dict[str, Any]:
    """``requests`` POSTs by ``concurrency`` clients at once; latencies and status codes."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    queue = list(range(requests))

    async def client(session: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            start = time.perf_counter()
            try:
                response = await session.post(
                    f"{url}/predict", files={"image": ("photo.png", png, "image/png")},
                    data={"text": PHRASE})
                status = str(response.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": requests, "wall_s": round(wall, 3),
            "throughput_per_s": round(requests / wall, 2),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
            "statuses": statuses, "failed": requests - statuses.get("200", 0),
            "refused_503": statuses.get("503", 0)}


def serve_levels(checkpoint: Path, png: bytes, max_batch: int, levels: list[int],
                 requests: int, env: dict[str, str]) -> list[dict[str, Any]]:
    server = Server(checkpoint, max_batch, env)
    try:
        asyncio.run(_level(server.url, png, 2, 4, 120))  # warm-up, not reported
        return [asyncio.run(_level(server.url, png, c, requests, 300)) for c in levels]
    finally:
        server.stop()


def predict_processes(checkpoint: Path, image: Path, folder: Path, sequential: int,
                      requests: int, env: dict[str, str]) -> dict[str, Any]:
    """``sequential`` one-request ``vipa predict`` processes, then one ``--batch`` of all."""
    base = [*vipa_command(), "predict", "--checkpoint", str(checkpoint), "--device", "cpu"]
    start = time.perf_counter()
    for i in range(sequential):
        subprocess.run([*base, str(image), PHRASE, "--out", str(folder / f"seq{i}")], env=env,
                       check=True, capture_output=True)
    per_process = (time.perf_counter() - start) / sequential
    batch = folder / "requests.jsonl"
    copies = []  # distinct files, as a real batch holds: no two requests share a pass
    for i in range(requests):
        copies.append(folder / f"photo-{i}.png")
        copies[-1].write_bytes(image.read_bytes())
    batch.write_text("".join(json.dumps({"image": str(c), "text": PHRASE}) + "\n"
                             for c in copies))
    start = time.perf_counter()
    subprocess.run([*base, "--batch", str(batch), "--out", str(folder / "batch"),
                    "--no-progress"], env=env, check=True, capture_output=True)
    batch_s = time.perf_counter() - start
    return {"sequential_processes": sequential, "s_per_process": round(per_process, 3),
            "sequential_throughput_per_s": round(1 / per_process, 2),
            "batch_requests": requests, "batch_s": round(batch_s, 3),
            "batch_throughput_per_s": round(requests / batch_s, 2)}


def markdown(report: dict[str, Any]) -> str:
    from bench.report import machine_line

    lines = [machine_line(report["machine"]), "",
             f"Preset `{report['preset']}`, random weights; one 256 px photo and one phrase "
             f"per request; {report['requests']} requests per level.", "",
             "| server | concurrency | throughput /s | p50 ms | p95 ms | p99 ms | failed "
             "| of which 503 |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in report["serve"].items():
        for row in rows:
            lines.append(f"| {name} | {row['concurrency']} | {row['throughput_per_s']:.2f} "
                         f"| {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} "
                         f"| {row['failed']} | {row['refused_503']} |")
    p = report["processes"]
    lines += ["", f"`vipa predict` processes one after another: {p['s_per_process']:.2f} s "
              f"each ({p['sequential_throughput_per_s']:.2f} requests/s); one `vipa predict "
              f"--batch` of {p['batch_requests']} requests: {p['batch_s']:.1f} s "
              f"({p['batch_throughput_per_s']:.2f} requests/s).", "",
              "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.2f}x |" for name, value in report["ratios"].items()]
    return "\n".join(lines) + "\n"


def ratios(report: dict[str, Any]) -> dict[str, float]:
    batched, single = report["serve"]["batch 8"], report["serve"]["batch 1"]
    top = max(batched, key=lambda r: r["concurrency"])
    best = max(batched, key=lambda r: r["throughput_per_s"])
    same = next(r for r in single if r["concurrency"] == top["concurrency"])
    return {f"batching speed-up at concurrency {top['concurrency']} (batch 8 / batch 1)":
            top["throughput_per_s"] / same["throughput_per_s"],
            "best server throughput / sequential processes":
            best["throughput_per_s"] / report["processes"]["sequential_throughput_per_s"],
            "best server throughput / one --batch process":
            best["throughput_per_s"] / report["processes"]["batch_throughput_per_s"]}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in report["serve"].items():
        levels = [r["concurrency"] for r in rows]
        right.plot(levels, [r["throughput_per_s"] for r in rows], marker="o", label=name)
        for q, style in (("p50", "-"), ("p99", "--")):
            left.plot(levels, [r[f"{q}_ms"] for r in rows], style, marker="o",
                      label=f"{name} {q}")
    p = report["processes"]
    right.axhline(p["sequential_throughput_per_s"], color="grey", ls=":",
                  label="sequential vipa predict")
    right.axhline(p["batch_throughput_per_s"], color="black", ls="-.",
                  label="vipa predict --batch")
    for axis, title in ((left, "latency (ms)"), (right, "throughput (requests/s)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_title(title)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--requests", type=int, default=64, help="requests per level")
    parser.add_argument("--sequential", type=int, default=4,
                        help="one-request vipa predict processes to time")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of children")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override (repeatable)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    from bench.report import emit
    from bench.speed_machine import machine_info

    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    levels = [int(x) for x in args.levels.split(",")]
    report: dict[str, Any] = {"preset": args.preset, "requests": args.requests,
                              "machine": machine_info([]), "serve": {}}
    with tempfile.TemporaryDirectory(prefix="vipa-load-") as tmp:
        folder = Path(tmp)
        checkpoint = write_checkpoint(args.preset, args.set, folder)
        png = photo_png()
        image = folder / "photo.png"
        image.write_bytes(png)
        for max_batch in (8, 1):
            print(f"[load] vipa serve --max-batch-size {max_batch} ...", file=sys.stderr)
            report["serve"][f"batch {max_batch}"] = serve_levels(checkpoint, png, max_batch,
                                                                 levels, args.requests, env)
        print("[load] vipa predict processes ...", file=sys.stderr)
        report["processes"] = predict_processes(checkpoint, image, folder, args.sequential,
                                                args.requests, env)
    report["ratios"] = ratios(report)
    emit(report, markdown, args.json, args.markdown)
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
