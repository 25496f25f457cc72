"""`vipa package` -> a Hub-style model folder -> an HF cache on disk -> vipa.load("org/name")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

import vipa
from vipa.checkpoint import read_checkpoint
from vipa.errors import CheckpointError, DataError
from vipa_cli import app

runner = CliRunner()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def folder(served_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "tiny-vipa"
    done = runner.invoke(app, ["package", str(served_checkpoint), str(out)])
    assert done.exit_code == 0, done.output
    assert "hf upload ORG/tiny-vipa" in done.stdout
    return out


def _hf_cache(root: Path, repo: str, folder: Path) -> Path:
    """The layout huggingface_hub writes: blobs, a snapshot per commit, refs/main."""
    base = root / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (base / "blobs").mkdir()
    for file in folder.iterdir():
        blob = base / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(COMMIT)
    return root


def test_the_folder_holds_weights_config_and_a_card_from_the_run(folder, served_checkpoint):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors"]
    stored = read_checkpoint(served_checkpoint)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == set(stored.tensors)
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "vipa" and config["tokenizer"] == stored.tokenizer
    assert config["training"]["metrics"] == stored.metrics
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "vipa" and meta["pipeline_tag"] == "image-segmentation"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["synthetic"]
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "minival"  # the split the checkpoint was chosen on
    got = {m["type"]: m["value"] for m in results["metrics"]}
    assert got["oIoU"] == round(stored.metrics["oIoU"], 4)  # from the run, not typed
    assert 'vipa.load("ORG/tiny-vipa")' in card


def test_load_by_hub_id_offline_from_the_hf_cache(folder, served_checkpoint, scene_photo,
                                                 tmp_path, monkeypatch):
    cache = _hf_cache(tmp_path / "hf", "org/tiny-vipa", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read once at import
    want = vipa.load(served_checkpoint, device="cpu").predict(scene_photo, "the red square")[0]
    for source in ("org/tiny-vipa", "hf://org/tiny-vipa", f"org/tiny-vipa@{COMMIT}", folder):
        got = vipa.load(source, device="cpu").predict(scene_photo, "the red square")[0]
        assert np.array_equal(got.mask, want.mask), source
        assert np.allclose(got.probabilities, want.probabilities, atol=1e-5), source
    with pytest.raises(DataError, match="model org/missing not found.*HF_HUB_OFFLINE") as caught:
        vipa.load("org/missing")
    assert "\n" not in str(caught.value)
    with pytest.raises(DataError, match="no model at runs/best.safetensors"):
        vipa.load("runs/best.safetensors")  # a missing file, not a Hub id


def test_predict_takes_a_hub_id_in_a_fresh_process(folder, scene_photo, tmp_path):
    cache = _hf_cache(tmp_path / "hf", "org/tiny-vipa", folder)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "vipa_cli", "predict", str(scene_photo),
                           "the red square", "--checkpoint", "org/tiny-vipa", "--out",
                           str(tmp_path / "o"), "--json"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert Image.open(record["mask"]).size == (150, 90)


def test_a_folder_with_pickles_or_code_is_refused(folder, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(folder / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    with pytest.raises(CheckpointError, match="only pickled weights .*pytorch_model.bin"):
        vipa.load(pickled)
    code = tmp_path / "code"
    shutil.copytree(folder, code)
    config = json.loads((code / "config.json").read_text())
    (code / "config.json").write_text(json.dumps({**config, "auto_map": {"x": "evil.Model"}}))
    with pytest.raises(CheckpointError, match="names code to import .auto_map."):
        vipa.load(code)
    done = runner.invoke(app, ["predict", "img.png", "x", "--checkpoint", str(code)])
    assert done.exit_code == 1 and "names code to import" in done.stderr


def _predict_folder(images: Path, out: Path, *source: str, env: dict) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "vipa_cli", "predict", str(images),
                           "the red square", "the blue square", *source, "--out", str(out),
                           "--json", "--no-progress"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 1, done.stderr  # the corrupt image
    assert "broken.png" in done.stderr
    return json.loads((out / "results.json").read_text())


def test_from_checkpoint_to_hub_id_onnx_and_int8_on_a_folder(folder, served_checkpoint,
                                                             scene_photo, tmp_path):
    """Package, an HF cache, a folder with a corrupt image: COCO results that pycocotools
    reads, whose masks are the PNGs vipa predict wrote; the same from ONNX and int8."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(scene_photo, images / "one.png")
    Image.open(scene_photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images / "two.png")
    (images / "broken.png").write_bytes(b"\x89PNG truncated")
    env = {**os.environ, "HF_HUB_CACHE": str(_hf_cache(tmp_path / "hf", "org/tiny-vipa", folder)),
           "HF_HUB_OFFLINE": "1", "VIPA_CACHE": str(tmp_path / "cache")}
    for fmt in ("onnx", "int8"):
        done = runner.invoke(app, ["export", "-c", str(served_checkpoint), "-o",
                                   str(tmp_path / f"{fmt}.onnx"),
                                   *(["--quantize", "int8"] if fmt == "int8" else [])])
        assert done.exit_code == 0, done.output
    assert "mean mask IoU with fp32 PyTorch" in done.stdout
    assert json.loads((tmp_path / "int8.onnx.vipa.json").read_text())["quantized"] == "int8"
    truth = COCO()
    truth.dataset = {"images": [{"id": 2, "height": 90, "width": 150},
                                {"id": 3, "height": 90, "width": 150}],
                     "annotations": [], "categories": [{"id": 1, "name": "referent"}]}
    truth.createIndex()
    runs = {"hub": ["--checkpoint", "org/tiny-vipa"],
            "onnx": ["--model", str(tmp_path / "onnx.onnx")],
            "int8": ["--model", str(tmp_path / "int8.onnx")]}
    masks = {}
    for name, source in runs.items():
        records = _predict_folder(images, tmp_path / name, *source, env=env)
        assert [(r["image_id"], Path(r["file_name"]).name) for r in records] == [
            (2, "one.png"), (2, "one.png"), (3, "two.png"), (3, "two.png")]  # 1 is broken
        assert len(truth.loadRes(str(tmp_path / name / "results.json")).getAnnIds()) == 4
        for record in records:
            rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
            decoded = mask_utils.decode(rle).astype(bool)
            assert np.array_equal(decoded, np.asarray(Image.open(record["mask"])) > 0)
        masks[name] = [mask_utils.decode({**r["segmentation"],
                                          "counts": r["segmentation"]["counts"].encode()})
                       for r in records]
    for hub, exported in zip(masks["hub"], masks["onnx"], strict=True):
        assert (hub != exported).mean() < 0.001  # the same model, exported
