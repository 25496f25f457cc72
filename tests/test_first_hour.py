"""What a new user meets in the first hour: devices, run folders, stdin and URLs, one option
vocabulary, the Python API's surface, the data check on the built-in set, big photos."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from PIL import Image
from typer.testing import CliRunner

import vipa
from vipa.errors import UsageError
from vipa_cli import app

runner = CliRunner()


def one_line_error(result, code: int, needle: str) -> str:  # noqa: ANN001 - a click Result
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(("requested", "needle"), [
    ("cuda", "device 'cuda' is not available: this machine has cpu"),
    ("gpu", "device 'gpu' is not available: this machine has cpu"),
    ("0", "device '0' is not available: this machine has cpu"),
    ("0,1", "one device per process; to train on several GPUs use torchrun"),
    ("tpu", "unknown device 'tpu'"),
])
def test_devices_this_machine_lacks_are_one_line(served_checkpoint, scene_photo, tmp_path,
                                                 requested, needle):
    result = runner.invoke(app, ["predict", str(scene_photo), "the red square", "-c",
                                 str(served_checkpoint), "--device", requested, "-o",
                                 str(tmp_path)])
    one_line_error(result, 2, needle)


def test_a_run_folder_means_its_best_checkpoint_and_a_resume_state_is_named(
        served_checkpoint, scene_photo, tmp_path):
    run = served_checkpoint.parent
    result = runner.invoke(app, ["predict", str(scene_photo), "the red square", "-c", str(run),
                                 "--output", str(tmp_path / "p"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{run} is a run folder: using its best.safetensors" in result.output
    state = next(run.glob("last.state-*.pt"))
    refused = runner.invoke(app, ["eval", "-c", str(state), "--no-progress"])
    one_line_error(refused, 1, f"is a resume state (optimizer and position), not a model: use "
                               f"the checkpoint beside it, {run / 'last.safetensors'}")
    config = runner.invoke(app, ["train", "-c", str(run / "best.safetensors")])
    one_line_error(config, 2, "names a recipe (cpu, paper, or a YAML/JSON file), not a model")


def test_predict_reads_an_image_from_standard_input(served_checkpoint, scene_photo, tmp_path):
    with open(scene_photo, "rb") as stdin:
        done = subprocess.run([sys.executable, "-m", "vipa_cli", "predict", "-", "the red square",
                               "-c", str(served_checkpoint), "--output", str(tmp_path),
                               "--device", "cpu"], stdin=stdin, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr
    mask = Image.open(tmp_path / "stdin-0-the-red-square.mask.png")
    assert mask.size == Image.open(scene_photo).size
    empty = subprocess.run([sys.executable, "-m", "vipa_cli", "predict", "-", "the cat", "-c",
                            str(served_checkpoint), "--output", str(tmp_path)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "no image on standard input" in empty.stderr


def test_predict_fetches_a_url_or_says_it_cannot(served_checkpoint, scene_photo, tmp_path):
    handler = type("Handler", (http.server.SimpleHTTPRequestHandler,), {
        "log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: handler(*a, directory=str(scene_photo.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{scene_photo.name}?size=full"
        result = runner.invoke(app, ["predict", url, "the red square", "-c",
                                     str(served_checkpoint), "--output", str(tmp_path),
                                     "--json", "--device", "cpu"])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["image"] == url and Path(record["mask"]).name.startswith("scene-0-")
    nobody = f"http://127.0.0.1:{free_port()}/cat.jpg"
    refused = runner.invoke(app, ["predict", nobody, "the cat", "-c", str(served_checkpoint),
                                  "--output", str(tmp_path)])
    one_line_error(refused, 1, f"cannot fetch {nobody}: ")
    assert "download the image and pass its path" in refused.output


def test_one_option_vocabulary_across_commands(served_checkpoint, scene_photo, tmp_path):
    predicted = runner.invoke(app, ["predict", str(scene_photo), "the red square", "-c",
                                    str(served_checkpoint), "--output", str(tmp_path / "a"),
                                    "--conf", "0.3", "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "a" / "scene-0-the-red-square.mask.png").is_file()
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"image": str(scene_photo),
                                    "texts": ["the red square", "the blue square"]}) + "\n"
                        + json.dumps({"image": str(scene_photo), "text": "the circle"}) + "\n")
    batch = runner.invoke(app, ["predict", "--batch", str(requests), "-c",
                                str(served_checkpoint), "--out", str(tmp_path / "b"),
                                "--device", "cpu", "--no-progress"])
    assert batch.exit_code == 0, batch.output
    lines = (tmp_path / "b" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [
        "the red square", "the blue square", "the circle"]
    bad = runner.invoke(app, ["predict", "--batch", str(requests), "--threshold", "2",
                              "-c", str(served_checkpoint)])
    one_line_error(bad, 2, "--threshold 2 is not allowed")


def test_the_python_api_surface(served_checkpoint, scene_photo, tmp_path):
    model = vipa.load(served_checkpoint, device="cpu")
    assert model.device == "cpu"
    results = model(scene_photo, ["the red square", "The red square!"])
    shown = repr(results[0])
    assert shown.startswith("Segmentation(text='the red square', score=")
    assert "bbox=[" in shown and "area=" in shown and "size=150x90" in shown
    assert len(shown) < 200  # no arrays
    overlay = results[0].plot()
    assert isinstance(overlay, Image.Image) and overlay.size == (150, 90)
    paths = [r.save(tmp_path) for r in results]
    assert paths[0][0].name == "scene-the-red-square.mask.png"
    assert paths[1][0].name == "scene-the-red-square-2.mask.png"  # slugs alike: both kept
    with pytest.raises(UsageError, match=r"^threshold=2 is not allowed"):
        model.predict(scene_photo, "x", threshold=2)


def test_data_check_passes_on_the_built_in_data():
    result = runner.invoke(app, ["data", "check", "--data", "synthetic", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output


def test_the_contour_band_is_the_mask_minus_its_square_erosion():
    """The band the overlay draws (bench.photo times it on a 12 MP photo)."""
    from vipa.viz import draw_overlay, outline

    mask = np.zeros((300, 400), bool)
    mask[50:250, 80:300] = True
    band = outline(mask, 16)
    assert band.sum() == 2 * 16 * (200 + 220) - 4 * 16 * 16
    assert band[50, 150] and band[65, 150] and not band[66, 150]
    ring = outline(mask, 3, outside=True)
    assert ring[47, 150] and not ring[46, 150] and not ring[50, 150]
    edge = np.zeros((20, 20), bool)
    edge[:, :10] = True  # touches the frame: only the side facing the outside is drawn
    assert outline(edge, 2)[:, 8:10].all() and not outline(edge, 2)[:, :8].any()
    overlay = draw_overlay(np.zeros((300, 400, 3), np.uint8), mask, "the cup on the left")
    assert overlay.size == (400, 300)


def test_the_contour_band_is_what_pils_rank_filters_draw():
    """The running-sum band (cropped to the mask's box) equals the 2-D rank filter it
    replaced, on random masks, boxes at the frame, every width, rim and ring."""
    from PIL import ImageFilter

    from vipa.viz import outline

    def rank_filter(mask: np.ndarray, width: int, outside: bool) -> np.ndarray:
        image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
        size = 2 * width + 1
        moved = np.asarray(image.filter(ImageFilter.MaxFilter(size) if outside
                                        else ImageFilter.MinFilter(size)))
        return moved > np.asarray(image) if outside else np.asarray(image) > moved

    rng = np.random.default_rng(0)
    for trial in range(60):
        height, width = rng.integers(5, 40, 2)
        mask = rng.random((height, width)) < rng.random()
        if trial % 2:
            mask = np.zeros((height, width), bool)
            top, left = rng.integers(0, height), rng.integers(0, width)
            mask[top:top + rng.integers(1, height), left:left + rng.integers(1, width)] = True
        for band in (1, 2, 5):
            for outside in (False, True):
                assert np.array_equal(outline(mask, band, outside=outside),
                                      rank_filter(mask, band, outside)), (trial, band, outside)
