"""Your own data: manifests, `vipa data check` / `convert`, fine-tuning, skipped samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vipa.checkpoint import read_checkpoint
from vipa.config import resolve_config
from vipa.data.dataset import RISDataset
from vipa.data.index import open_dataset
from vipa.data.synthetic import generate_synthetic
from vipa.training import train
from vipa_cli import app

runner = CliRunner()
TINY = ["veg.k=4", "decoder.dim=16", "train.warmup_steps=0", "data.max_val_samples=8",
        "train.val_every=1000", "train.log_every=1"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train small models; see ``single_thread`` in conftest."""


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [round(float(v), 1) for a in angles
            for v in (cx + rx * np.cos(a), cy + ry * np.sin(a))]


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_photo_manifest(folder: Path) -> Path:
    """Real photos from scikit-image with hand-drawn masks: every mask kind, both path kinds.

    train: astronaut, coffee, rocket; val: chelsea. Polygons are drawn around
    the objects by eye (rough, but on the right object), one PNG mask and two
    RLE masks among them; one image path is absolute.
    """
    from skimage import data

    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    photos = {name: getattr(data, name)() for name in ("astronaut", "coffee", "rocket", "chelsea")}
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(folder / "photos" / f"{name}.jpg", quality=92)
    cup = np.zeros(photos["coffee"].shape[:2], bool)
    yy, xx = np.mgrid[: cup.shape[0], : cup.shape[1]]
    cup |= ((xx - 290) / 120) ** 2 + ((yy - 150) / 130) ** 2 <= 1
    Image.fromarray(cup.astype(np.uint8) * 255).save(folder / "masks" / "cup.png")
    rocket = np.zeros(photos["rocket"].shape[:2], bool)
    rocket[130:410, 306:338] = True
    train = [
        {"image": "photos/astronaut.jpg", "texts": ["the astronaut", "the woman in orange"],
         "polygon": [[150, 10, 300, 10, 310, 190, 370, 230, 370, 511, 20, 511, 30, 250,
                      110, 190]], "id": "astronaut"},
        {"image": str((folder / "photos" / "astronaut.jpg").resolve()),
         "text": "the flag on the left", "polygon": [[0, 0, 95, 0, 95, 511, 0, 511]],
         "id": "flag"},
        {"image": "photos/coffee.jpg", "text": "the cup of coffee", "mask": "masks/cup.png",
         "id": "cup"},
        {"image": "photos/coffee.jpg", "text": "the red saucer",
         "polygon": [_ellipse(280, 240, 200, 140)], "id": "saucer"},
        {"image": "photos/rocket.jpg", "text": "the rocket in the middle",
         "rle": _rle(rocket), "id": "rocket"},
    ]
    left_eye = np.zeros(photos["chelsea"].shape[:2], bool)
    yy, xx = np.mgrid[: left_eye.shape[0], : left_eye.shape[1]]
    left_eye |= ((xx - 170) ** 2 + (yy - 116) ** 2) <= 34 ** 2
    val = [
        {"image": "photos/chelsea.jpg", "text": "the cat",
         "polygon": [[10, 10, 420, 10, 440, 299, 0, 299]], "id": "cat"},
        {"image": "photos/chelsea.jpg", "text": "the eye on the left", "rle": _rle(left_eye),
         "id": "left-eye"},
    ]
    for split, records in (("train", train), ("val", val)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photo_manifest(tmp_path_factory.mktemp("photos"))


def _run_config(root: Path, output: Path, steps: int, *more: str, data: str = "jsonl"):
    options = {"encoder": "tiny", "preset": "micro", "data": data, "data_root": root,
               "image_size": 64, "batch_size": 2, "max_steps": steps, "device": "cpu",
               "output": output}
    return resolve_config("cpu", options, [*TINY, *more])


def _samples(name: str, root: Path) -> list[tuple[str, str, bytes, bytes]]:
    """(split, text, image bytes hash, mask bytes) of every sample, in order."""
    import hashlib

    index = open_dataset(name, root)
    out = []
    for split in index.splits:
        for sample in index.samples(split):
            pixels, mask = index.load(sample)
            out.append((split, sample.text, hashlib.sha256(pixels.tobytes()).hexdigest(),
                        hashlib.sha256(mask.astype(bool).tobytes()).hexdigest()))
    return out


def test_a_manifest_trains_evaluates_and_predicts(photos, tmp_path):
    dataset = RISDataset(photos, "jsonl", "train", image_size=64)
    assert len(dataset) == 6 and dataset[0]["orig_size"].tolist() == [512, 512]
    assert {item.record_id for item in dataset.items} >= {"astronaut", "flag", "cup"}
    cfg = _run_config(photos, tmp_path / "run", 4)
    result = train(cfg, progress=False)
    # chosen on a minival carved from the training images (at least one), named in the config
    chosen = RISDataset(photos, "jsonl", cfg.data.val_split, image_size=64)
    assert cfg.data.val_split == "minival" and result.chosen_on == "minival"
    assert result.step == 4 and result.best_metrics["samples"] == len(chosen) > 0
    trained_on = RISDataset(photos, "jsonl", "train", image_size=64, minival_held_out=True)
    assert len(trained_on) + len(chosen) == 6
    # the recipe's loss.category needs object classes, which a manifest does not name
    assert cfg.model.loss.category > 0 and "categories: 0" in (result.last.parent /
                                                               "config.yaml").read_text()
    evaluated = runner.invoke(app, ["eval", "-c", str(result.last), "--data", "jsonl",
                                    "--data-root", str(photos), "--split", "train",
                                    "--no-progress"])
    assert evaluated.exit_code == 0, evaluated.output
    # train as the run trained on it: without the minival images
    assert "train" in evaluated.output and f" {len(trained_on)} " in evaluated.output
    predicted = runner.invoke(app, ["predict", str(photos / "photos" / "coffee.jpg"),
                                    "the cup", "-c", str(result.last), "--out",
                                    str(tmp_path / "p"), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert Image.open(json.loads(predicted.stdout)["mask"]).size == (600, 400)


def test_convert_to_the_refer_layout_and_back_keeps_every_sample(photos, tmp_path):
    refer = tmp_path / "refer"
    done = runner.invoke(app, ["data", "convert", "--data", "jsonl", "--data-root", str(photos),
                               "--out", str(refer), "--no-progress"])
    assert done.exit_code == 0, done.output
    back = tmp_path / "back"
    again = runner.invoke(app, ["data", "convert", "--data", "refer", "--data-root",
                                str(refer), "--out", str(back), "--no-progress"])
    assert again.exit_code == 0, again.output
    original = _samples("jsonl", photos)
    assert _samples("refer", refer) == original
    assert _samples("jsonl", back) == original
    assert len(original) == 8


def test_the_synthetic_set_converts_to_a_manifest(tmp_path):
    root = generate_synthetic(tmp_path / "synth", seed=2, n_train=10, n_val=4, n_test=2,
                              image_size=48)
    out = tmp_path / "manifest"
    done = runner.invoke(app, ["data", "convert", "--data", "synthetic", "--data-root",
                               str(root), "--out", str(out), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert _samples("jsonl", out) == _samples("synthetic", root)
    records = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert all(r["kind"] in ("attribute", "position", "relation") for r in records)


def _broken_set(folder: Path, photos: Path) -> Path:
    """One of each fault `vipa data check` must name, next to a sound record."""
    import shutil

    shutil.copytree(photos / "photos", folder / "photos")
    cut = (folder / "photos" / "coffee.jpg").read_bytes()
    (folder / "photos" / "cut.jpg").write_bytes(cut[: len(cut) // 3])
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "small.png")
    Image.fromarray(np.zeros((400, 600), np.uint8)).save(folder / "empty.png")
    good = {"image": "photos/coffee.jpg", "text": "the cup", "polygon": [_ellipse(290, 150, 90,
                                                                              90)]}
    lines = [
        json.dumps({**good, "id": "a"}),                                     # 1: sound
        json.dumps({**good, "image": "photos/none.jpg", "id": "b"}),         # 2: missing image
        json.dumps({**good, "image": "photos/cut.jpg", "id": "c"}),          # 3: truncated
        json.dumps({"image": "photos/coffee.jpg", "text": "x", "mask": "small.png",
                    "id": "d"}),                                              # 4: wrong size
        json.dumps({"image": "photos/coffee.jpg", "text": "x", "mask": "empty.png",
                    "id": "e"}),                                              # 5: empty mask
        json.dumps({**good, "text": "  ", "id": "f"}),                       # 6: empty text
        json.dumps({**good, "id": "a"}),                                     # 7: duplicate id
        '{"image": "photos/coffee.jpg", "text": ',                           # 8: bad JSON
    ]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "val.jsonl").write_text(json.dumps({**good, "id": "v"}) + "\n")  # 9: shared image
    return folder


def test_data_check_names_every_fault_on_its_own_line(photos, tmp_path):
    broken = _broken_set(tmp_path / "broken", photos)
    result = runner.invoke(app, ["data", "check", "--data", "jsonl", "--data-root", str(broken),
                                 "--no-progress"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    expected = {
        "train.jsonl:2: missing image": "missing image",
        "train.jsonl:3: corrupt image": "truncated",
        "train.jsonl:4: the mask is 10x10 but the image is 600x400": "wrong size",
        "train.jsonl:5: the mask is empty": "empty mask",
        "train.jsonl:6: a phrase is empty": "empty text",
        "train.jsonl:7: id 'a' is also used at train.jsonl:1": "duplicate id",
        "train.jsonl:8: not JSON": "bad JSON line",
        "is in splits train, val: splits must not share images": "shared image",
    }
    for needle, fault in expected.items():
        assert sum(needle in line for line in lines) == 1, (fault, result.output)
    assert lines[-1].startswith("jsonl: ") and "8 problems" in lines[-1]
    sound = runner.invoke(app, ["data", "check", "--data", "jsonl", "--data-root", str(photos),
                                "--no-progress"])
    assert sound.exit_code == 0 and "no problems" in sound.output, sound.output


def test_data_check_names_missing_refcoco_files_and_where_it_looked(tmp_path):
    (tmp_path / "refcoco").mkdir()
    result = runner.invoke(app, ["data", "check", "--data", "refcoco", "--data-root",
                                 str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    assert f"missing {tmp_path / 'refcoco' / 'refs(unc).p'}" in result.output
    assert f"missing {tmp_path / 'refcoco' / 'instances.json'}" in result.output
    assert "no image directory found; tried" in result.output


def test_init_from_fine_tunes_and_scores_at_least_the_start(photos, tmp_path):
    synth = generate_synthetic(tmp_path / "synth", seed=6, n_train=16, n_val=4, n_test=2,
                               image_size=64)
    start = train(_run_config(synth, tmp_path / "start", 6, data="synthetic"), progress=False)

    def score(checkpoint: Path) -> float:
        out = tmp_path / f"{checkpoint.parent.name}.json"
        done = runner.invoke(app, ["eval", "-c", str(checkpoint), "--data", "jsonl",
                                   "--data-root", str(photos), "--split", "train",
                                   "--no-progress", "-o", str(out)])
        assert done.exit_code == 0, done.output
        return json.loads(out.read_text())["mIoU"]

    tuned = runner.invoke(app, ["train", "--init-from", str(start.last), "--data", "jsonl",
                                "--data-root", str(photos), "--output", str(tmp_path / "tuned"),
                                "--max-steps", "30", "--batch-size", "2", "--lr", "0.003",
                                "--device", "cpu", "--no-progress",
                                "--set", "train.val_every=1000", "--set", "train.log_every=1",
                                "--set", "train.freeze=[encoder.stem_conv]"])
    assert tuned.exit_code == 0, tuned.output
    records = [json.loads(x) for x in (tmp_path / "tuned" / "metrics.jsonl").read_text()
               .splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the loss on these samples fell
    assert score(tmp_path / "tuned" / "last.safetensors") >= score(start.last)
    before, after = read_checkpoint(start.last), read_checkpoint(tmp_path / "tuned" /
                                                                 "last.safetensors")
    import dataclasses

    kept = dataclasses.replace(before.model_config.encoder, weights="random")
    assert dataclasses.replace(before.model_config, encoder=kept) == after.model_config
    frozen = "encoder.stem_conv.0.weight"
    assert np.array_equal(before.tensors[frozen].numpy(), after.tensors[frozen].numpy())
    assert after.step == 30


def test_init_from_with_another_encoder_is_one_line(photos, tmp_path):
    synth = generate_synthetic(tmp_path / "synth", seed=6, n_train=8, n_val=4, n_test=2,
                               image_size=64)
    start = train(_run_config(synth, tmp_path / "start", 2, data="synthetic"), progress=False)
    result = runner.invoke(app, ["train", "--init-from", str(start.last), "--encoder",
                                 "swin-bert", "--preset", "micro", "--data", "jsonl",
                                 "--data-root", str(photos), "--max-steps", "2",
                                 "--output", str(tmp_path / "x"), "--no-progress"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "the options change the model's weights" in lines[0]
    assert "model.encoder.name" in lines[0]
    bad = runner.invoke(app, ["train", "--init-from", str(start.last), "--data", "jsonl",
                              "--data-root", str(photos), "--no-progress",
                              "--set", "train.freeze=[encodr]"])
    assert bad.exit_code == 2 and "train.freeze: no module 'encodr'" in bad.output


def test_a_corrupt_training_image_is_skipped_and_named_once(photos, tmp_path, caplog):
    import logging
    import shutil

    data = tmp_path / "data"
    shutil.copytree(photos, data)
    (data / "photos" / "rocket.jpg").write_bytes(b"not a jpeg any more")
    cfg = _run_config(data, tmp_path / "run", 12)
    with caplog.at_level(logging.WARNING):
        result = train(cfg, progress=False)
    assert result.step == 12  # the run finished
    warnings = [r.message for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "rocket" in caplog.text  # named once, every epoch skipped
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines()]
    named = [r for r in records if "skipped" in r]
    assert len(named) == 1 and named[0]["skipped"] == "rocket"
    assert "corrupt image" in named[0]["error"]
    assert max(r.get("skipped_samples", 0) for r in records) >= 2  # counted each time
    failing = runner.invoke(app, ["train", "--data", "jsonl", "--data-root", str(data),
                                  "--encoder", "tiny", "--preset", "micro", "--max-steps", "2",
                                  "--image-size", "64", "--batch-size", "2",
                                  "--output", str(tmp_path / "f"), "--no-progress",
                                  "--set", "data.on_error=fail"])
    assert failing.exit_code == 1 and "corrupt image" in failing.output


def test_eval_gallery_draws_the_worst_and_best_per_kind(tmp_path):
    synth = generate_synthetic(tmp_path / "synth", seed=7, n_train=12, n_val=12, n_test=2,
                               image_size=64)
    run = train(_run_config(synth, tmp_path / "run", 3, data="synthetic"), progress=False)
    gallery = tmp_path / "gallery"
    result = runner.invoke(app, ["eval", "-c", str(run.last), "--data-root", str(synth),
                                 "--gallery", str(gallery), "--gallery-count", "2",
                                 "--split", "val", "--no-progress"])
    assert result.exit_code == 0, result.output
    pages = sorted(p.name for p in gallery.glob("*.png"))
    assert pages == sorted(f"{kind}-{end}.png" for kind in ("attribute", "position", "relation")
                           for end in ("best", "worst"))
    page = Image.open(gallery / "position-worst.png")
    assert page.height > 2 * 160  # two rows of image | ground truth | prediction
    index = (gallery / "index.html").read_text()
    assert index.count("<tr><td>") == 12 and "position worst" in index
    assert "gallery of the worst and best samples" in result.output


def test_the_carved_minival_does_not_depend_on_where_the_data_lives(tmp_path):
    """A manifest names its images by path; the images a minival takes stay the same when
    the folder is written elsewhere (it once followed the folder's name)."""
    from vipa.data.splits import MINIVAL, split_samples

    held = []
    for folder in ("a", "b", "somewhere/else/entirely", "x1", "photos-2", "deep/er"):
        root = write_photo_manifest(tmp_path / folder)
        index = open_dataset("jsonl", root)
        held.append(sorted(Path(s.file_name).name
                           for s in split_samples(index, MINIVAL)))
    assert held[0] and all(names == held[0] for names in held)
