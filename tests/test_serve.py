"""`vipa serve` as a real process on a loopback port, driven with real HTTP requests (httpx)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port
from PIL import Image
from typer.testing import CliRunner

from vipa_cli import app

runner = CliRunner()


class Server:
    """`vipa serve` in a subprocess; ``url`` once /health answers."""

    def __init__(self, checkpoint: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vipa_cli", "serve", "--checkpoint", str(checkpoint),
             "--port", str(self.port), "--device", "cpu", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.process.poll() is None, self.process.communicate()[0]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the server did not come up")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output = self.process.communicate(timeout=60)[0]
        return self.process.returncode, output


@pytest.fixture(scope="module")
def server(served_checkpoint) -> Iterator[Server]:
    running = Server(served_checkpoint, "--max-batch-size", "8", "--batch-timeout-ms", "50",
                     "--max-phrases", "4", "--max-body-mb", "0.5")
    yield running
    running.stop()


def _form(scene_photo: Path, *texts: str) -> dict:
    return {"files": {"image": ("scene.png", scene_photo.read_bytes(), "image/png")},
            "data": {"text": list(texts)}}


def test_health_and_metrics(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and "vipa_requests_total" in metrics.text


def test_predict_multipart_and_json_match_vipa_predict(server, served_checkpoint, scene_photo,
                                                       tmp_path):
    from pycocotools import mask as mask_utils

    texts = ["the red square", "the blue square on the right"]
    form = httpx.post(f"{server.url}/predict?include=png", **_form(scene_photo, *texts), timeout=60)
    assert form.status_code == 200, form.text
    body = {"image": base64.b64encode(scene_photo.read_bytes()).decode(), "texts": texts}
    as_json = httpx.post(f"{server.url}/predict", json=body, timeout=60).json()
    predicted = runner.invoke(app, ["predict", str(scene_photo), *texts, "-c",
                                    str(served_checkpoint), "--out", str(tmp_path), "--device",
                                    "cpu", "--json"])
    assert predicted.exit_code == 0, predicted.output
    for served, other, record in zip(form.json()["results"], as_json["results"],
                                     map(json.loads, predicted.stdout.splitlines()),
                                     strict=True):
        assert served["text"] == other["text"] == record["text"]
        decoded = mask_utils.decode({"size": served["mask_rle"]["size"],
                                     "counts": served["mask_rle"]["counts"].encode()})
        written = np.asarray(Image.open(record["mask"])) > 0
        assert decoded.shape == (90, 150)  # the image's own size
        assert np.array_equal(decoded.astype(bool), written)  # what `vipa predict` writes
        assert served["mask_rle"] == other["mask_rle"] and served["area"] == record["area"]
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(served["mask_png"])))) > 0
        assert np.array_equal(png, written)
        assert served["bbox"] == record["bbox"]  # one box convention: COCO x, y, w, h
        assert served["score"] == pytest.approx(record["score"], abs=1e-5)
        assert "mask_png" not in other


BAD = [
    ("not an image", lambda p: {"files": {"image": ("x.png", b"plain text", "image/png")},
                                "data": {"text": ["a"]}}, 400, "corrupt image"),
    ("missing text", lambda p: {"files": {"image": ("s.png", p.read_bytes(), "image/png")}},
     400, "give at least one phrase"),
    ("empty text", lambda p: _form(p, "  "), 400, "phrase 1 is empty"),
    ("too many phrases", lambda p: _form(p, *"abcde"), 400, "5 phrases in one request"),
    ("no image field", lambda p: {"data": {"text": ["a"]}, "files": {"other": ("a", b"x")}},
     400, "exactly one image file"),
    ("body too large", lambda p: {"files": {"image": ("big.png", b"\0" * 600_000, "image/png")},
                                  "data": {"text": ["a"]}}, 413, "over the limit"),
    ("wrong content type", lambda p: {"content": b"hello", "headers": {"content-type":
                                                                         "text/plain"}},
     415, "is not accepted"),
    ("json without image", lambda p: {"json": {"texts": ["a"]}}, 400, "never as paths"),
    ("json with a path", lambda p: {"json": {"image_path": "/etc/passwd", "texts": ["a"]}},
     400, "never as paths"),
    ("json bad base64", lambda p: {"json": {"image": "!!!", "texts": ["a"]}}, 400,
     "not valid base64"),
    ("json not json", lambda p: {"content": b"{", "headers": {"content-type":
                                                               "application/json"}},
     400, "not JSON"),
]


@pytest.mark.parametrize("name, request_of, status, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_with_a_one_line_error(server, scene_photo, name, request_of, status,
                                                  needle):
    answer = httpx.post(f"{server.url}/predict", **request_of(scene_photo), timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert needle in error and "\n" not in error
    assert httpx.get(f"{server.url}/health").status_code == 200  # still up


def test_decompression_bomb_is_refused(server):
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    answer = httpx.post(f"{server.url}/predict", files={"image": ("b.png", bytes(data))},
                        data={"text": ["a"]})
    assert answer.status_code == 413 and "over the limit" in answer.json()["error"]


def test_requests_of_concurrent_clients_share_model_calls(server, scene_photo):
    answers = []

    def client(text: str) -> None:
        answers.append(httpx.post(f"{server.url}/predict", **_form(scene_photo, text), timeout=60))

    threads = [threading.Thread(target=client, args=(f"the square {i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 6
    metrics = httpx.get(f"{server.url}/metrics").text
    count = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith("vipa_batch_phrases_count")))
    total = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith("vipa_batch_phrases_sum")))
    assert total / count > 1  # on average more than one phrase per model call


def test_api_key_full_queue_and_graceful_sigterm(served_checkpoint, scene_photo):
    guarded = Server(served_checkpoint, "--api-key", "s3cret", "--max-queued", "1",
                     "--batch-timeout-ms", "1500")
    try:
        assert httpx.post(f"{guarded.url}/predict", **_form(scene_photo, "a")).status_code == 401
        wrong = httpx.post(f"{guarded.url}/predict", **_form(scene_photo, "a"),
                           headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        key = {"Authorization": "Bearer s3cret"}
        first: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: first.append(httpx.post(
            f"{guarded.url}/predict", **_form(scene_photo, "the red square"), headers=key,
            timeout=60)))
        waiting.start()
        time.sleep(0.5)  # the first request waits 1.5 s for company in its batch
        full = httpx.post(f"{guarded.url}/predict", **_form(scene_photo, "b"), headers=key)
        assert full.status_code == 503 and full.headers["Retry-After"] == "1"
        guarded.process.send_signal(signal.SIGTERM)  # while the first is still in flight
        waiting.join(timeout=60)
        assert first and first[0].status_code == 200  # finished, not dropped
    finally:
        code, output = guarded.stop()
    assert code == 0, output


def test_binding_beyond_loopback_without_a_key_warns(served_checkpoint):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vipa_cli", "serve", "--checkpoint",
                                str(served_checkpoint), "--host", "0.0.0.0", "--port", str(port),
                                "--device", "cpu"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert "warning: binding 0.0.0.0 without --api-key" in line, line
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
