"""The Python API: vipa.load + Model.predict on every kind of image, the docs' example runs."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

import vipa
from vipa.errors import DataError, UsageError, VipaError
from vipa_cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_import_vipa_is_cheap_and_load_is_there():
    code = ("import sys, vipa; print('numpy' in sys.modules); vipa.load; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]  # torch loads with the first model, not before


def test_every_image_kind_gives_the_same_masks(served_checkpoint, scene_photo):
    model = vipa.load(served_checkpoint, device="cpu")
    pixels = np.asarray(Image.open(scene_photo).convert("RGB"))
    kinds = [scene_photo, str(scene_photo), Image.open(scene_photo), pixels,
             scene_photo.read_bytes()]
    results = model.predict(kinds, ["the red square", "the blue square"])
    assert len(results) == 2 * len(kinds)
    assert [r.text for r in results[:2]] == ["the red square", "the blue square"]
    for result in results:
        assert result.mask.shape == (90, 150) and result.mask.dtype == bool
        assert result.probabilities.shape == (90, 150)
    for i in range(2):
        for other in results[i::2]:
            assert np.array_equal(other.mask, results[i].mask)
    assert results[0].file_name == str(scene_photo) and results[6].file_name == ""


def test_results_carry_coco_fields_and_save_what_vipa_predict_writes(served_checkpoint,
                                                                    scene_photo, tmp_path):
    model = vipa.load(served_checkpoint, device="cpu")
    [result] = model.predict(scene_photo, "the red square")
    decoded = mask_utils.decode({"size": result.rle["size"],
                                 "counts": result.rle["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), result.mask)
    if result.area:
        ys, xs = np.nonzero(result.mask)
        assert result.bbox == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                               ys.max() - ys.min() + 1]
    record = result.to_coco(image_id=7)
    assert record["image_id"] == 7 and record["segmentation"] == result.rle
    assert set(record) == {"image_id", "category_id", "file_name", "text", "segmentation",
                           "bbox", "area", "score"}
    mask_path, overlay_path = result.save(tmp_path / "api")
    assert mask_path.name == "scene-the-red-square.mask.png" and overlay_path.is_file()
    cli = CliRunner().invoke(app, ["predict", str(scene_photo), "the red square",
                                   "--checkpoint", str(served_checkpoint), "--out",
                                   str(tmp_path / "cli"), "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    [written] = (tmp_path / "cli").glob("*.mask.png")
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(Image.open(mask_path)))


def test_phrases_per_image_and_bad_inputs(served_checkpoint, scene_photo):
    model = vipa.load(served_checkpoint, device="cpu")
    results = model.predict([scene_photo, scene_photo], [["the red square"],
                                                         ["a", "b"]], batch_size=1)
    assert [r.text for r in results] == ["the red square", "a", "b"]
    with pytest.raises(UsageError, match="one list of phrases per image"):
        model.predict([scene_photo, scene_photo], [["a"]])
    with pytest.raises(UsageError, match="uint8"):
        model.predict(np.zeros((8, 8, 3), np.float32), "a")
    with pytest.raises(DataError, match="the given bytes"):
        model.predict(b"not an image", "a")
    with pytest.raises(DataError, match="no model at"):
        vipa.load("missing.safetensors")


def test_the_docs_example_runs(served_checkpoint, scene_photo, tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "best.safetensors").write_bytes(served_checkpoint.read_bytes())
    Image.open(scene_photo).convert("RGB").save(tmp_path / "shapes.png")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    exec(compile(code, str(DOCS), "exec"), {})
    assert printed.getvalue().count("\n") == 2
    assert len(list((tmp_path / "predictions").glob("shapes-*.mask.png"))) == 2


def test_load_takes_the_precision_of_the_command_line(served_checkpoint, scene_photo):
    full = vipa.load(served_checkpoint, device="cpu").predict(scene_photo, "the red square")
    half = vipa.load(served_checkpoint, device="cpu", precision="bf16").predict(
        scene_photo, "the red square")
    assert (full[0].mask != half[0].mask).mean() < 0.02
    with pytest.raises(VipaError, match="precision must be one of fp32, bf16"):
        vipa.load(served_checkpoint, device="cpu", precision="fp16")
