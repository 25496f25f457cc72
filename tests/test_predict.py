"""`vipa predict`: masks and overlays at original size, --json, batch mode, bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port
from PIL import Image
from typer.testing import CliRunner

from vipa.config import resolve_config
from vipa.data.dataset import RISDataset
from vipa.data.synthetic import generate_synthetic
from vipa.errors import DataError
from vipa.inference.io import read_image
from vipa.inference.predict import predict_image
from vipa.inference.runtime import TorchOptions, TorchRuntime
from vipa.training import train
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=3, n_train=40, n_val=6,
                              n_test=4, image_size=64)


@pytest.fixture(scope="module")
def checkpoint(data_root, tmp_path_factory) -> Path:
    """A tiny model trained for 40 steps on the synthetic set (seconds on CPU).

    64 px, not 32: at 32 px the stride-32 map is 1x1 and the decoder's GroupNorm
    rejects a single-phrase batch (one value per group).
    """
    output = tmp_path_factory.mktemp("run")
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data_root": data_root,
               "image_size": 64, "batch_size": 4, "max_steps": 40, "device": "cpu",
               "output": output}
    cfg = resolve_config("cpu", options, [
        "veg.k=4", "decoder.dim=16", "train.warmup_steps=0", "train.lr=3e-3",
        "train.checkpoint_every=40", "train.val_every=1000", "data.max_val_samples=4"])
    return train(cfg, progress=False).last


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    Image.fromarray(data.astronaut()).resize((300, 200)).save(path, quality=90)
    return path


def invoke(*args: str):
    return runner.invoke(app, [*args], catch_exceptions=False)


def test_predict_writes_mask_and_overlay_at_original_size(checkpoint, photo, tmp_path):
    result = invoke("predict", str(photo), "the astronaut", "the red flag", "--checkpoint",
                    str(checkpoint), "--out", str(tmp_path), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["the astronaut", "the red flag"]
    for i, record in enumerate(records):
        assert set(record) >= {"text", "mask", "overlay", "area", "bbox", "score"}
        assert Path(record["mask"]).name == f"astronaut-{i}-{record['text'].replace(' ', '-')}" \
                                            ".mask.png"
        mask = Image.open(record["mask"])
        overlay = Image.open(record["overlay"])
        assert (mask.mode, mask.size) == ("L", (300, 200))
        assert (overlay.mode, overlay.size) == ("RGB", (300, 200))
        pixels = np.asarray(mask)
        assert set(np.unique(pixels)) <= {0, 255}
        assert record["area"] == int((pixels == 255).sum())
        if record["area"]:
            ys, xs = np.nonzero(pixels)
            assert record["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                      ys.max() - ys.min() + 1]  # COCO x, y, width, height
            assert 0.5 <= record["score"] <= 1.0
        else:
            assert record["bbox"] == [0, 0, 0, 0]


def test_two_phrases_run_as_one_batch_and_match_single_runs(checkpoint, photo, tmp_path):
    predictor = TorchRuntime.from_checkpoint(checkpoint, "cpu")
    calls = []
    run = predictor.run
    predictor.run = lambda *a: calls.append((a[0].shape[0], a[1].shape[0])) or run(*a)
    both = predict_image(predictor, photo, ["the astronaut", "the red flag"], tmp_path / "a")
    assert calls == [(1, 2)]  # one call: the image once, both phrases
    alone = predict_image(predictor, photo, ["the red flag"], tmp_path / "b")
    assert np.array_equal(np.asarray(Image.open(both[1].mask)),
                          np.asarray(Image.open(alone[0].mask)))


def test_trained_scene_gives_a_nontrivial_mask(checkpoint, data_root, tmp_path):
    dataset = RISDataset(data_root, "synthetic", "train")
    sample = dataset.items[0]
    image = dataset.image_dir / sample.file_name
    result = invoke("predict", str(image), sample.text, "--checkpoint", str(checkpoint),
                    "--out", str(tmp_path), "--device", "cpu", "--json", "--heatmap")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    height, width = np.asarray(Image.open(image)).shape[:2]
    assert 0 < record["area"] < height * width
    heatmap = Image.open(record["heatmap"])
    assert (heatmap.mode, heatmap.size) == ("RGB", (width, height))


def test_batch_mode(checkpoint, photo, data_root, tmp_path):
    dataset = RISDataset(data_root, "synthetic", "train")
    scene = dataset.image_dir / dataset.items[1].file_name
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in [
        {"image": str(photo), "text": "the astronaut"},
        {"image": str(photo), "text": "the flag"},
        {"image": str(scene), "text": dataset.items[1].text}]) + "\n\n")
    out = tmp_path / "out"
    result = invoke("predict", "--batch", str(requests), "--checkpoint", str(checkpoint),
                    "--out", str(out), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["the astronaut", "the flag", dataset.items[1].text]
    assert Path(records[2]["mask"]).name.startswith(f"{scene.stem}-2-")
    assert len(list(out.glob("*.mask.png"))) == 3
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] \
        == records
    assert Image.open(records[2]["mask"]).size == Image.open(scene).size


def test_batch_under_torchrun_shards_by_rank_and_rank0_merges(checkpoint, photo, data_root,
                                                                tmp_path):
    """2 gloo ranks split the image groups, each writes its own files, rank 0 merges in order."""
    dataset = RISDataset(data_root, "synthetic", "train")
    scenes = [dataset.image_dir / dataset.items[i].file_name for i in (1, 2)]
    rows = [(photo, "the astronaut"), (photo, "the flag"), (scenes[0], dataset.items[1].text),
            (scenes[1], dataset.items[2].text), (scenes[1], "the big square")]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"image": str(i), "text": t}) + "\n" for i, t in rows))
    common = ["--batch", str(requests), "--checkpoint", str(checkpoint), "--device", "cpu",
              "--json"]
    single = invoke("predict", *common, "--out", str(tmp_path / "one"))
    assert single.exit_code == 0, single.output
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "vipa_cli",
         "predict", *common, "--out", str(out)], capture_output=True, text=True, env=env,
        timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["request"] for r in printed] == [0, 1, 2, 3, 4]  # rank 0 alone reports, merged
    merged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert merged == printed
    by_rank = [[json.loads(line)["request"] for line in
                (out / f"results.rank-{rank}.jsonl").read_text().splitlines()] for rank in (0, 1)]
    assert by_rank == [[0, 1, 3, 4], [2]]  # image groups 0 and 2 on rank 0, group 1 on rank 1
    reference = [json.loads(line) for line in single.stdout.splitlines()]
    for want, got in zip(reference, merged, strict=True):
        assert want["text"] == got["text"] and want["area"] == got["area"]
        assert np.array_equal(np.asarray(Image.open(want["mask"])),
                              np.asarray(Image.open(got["mask"])))

def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_bad_inputs_are_one_line_errors(checkpoint, photo, tmp_path):
    common = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--device", "cpu"]
    missing = invoke("predict", str(tmp_path / "nope.jpg"), "a dog", *common)
    assert missing.exit_code == 1 and "missing image" in _error_line(missing)
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not an image\n")
    corrupt = invoke("predict", str(text_file), "a dog", *common)
    assert corrupt.exit_code == 1 and "corrupt image" in _error_line(corrupt)
    for phrase in ("", "   "):
        empty = invoke("predict", str(photo), "a dog", phrase, *common)
        assert empty.exit_code == 2 and "phrase 2 is empty" in _error_line(empty)
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = invoke("predict", str(photo), "a dog", "--checkpoint", str(checkpoint),
                        "--out", str(blocker / "sub"))
    assert unwritable.exit_code == 1 and "cannot write predictions" in _error_line(unwritable)
    bad_batch = tmp_path / "bad.jsonl"
    bad_batch.write_text('{"image": "x.jpg"}\n')
    bad = invoke("predict", "--batch", str(bad_batch), *common)
    assert bad.exit_code == 1 and "bad.jsonl:1" in _error_line(bad)
    no_text = invoke("predict", str(photo), *common)
    assert no_text.exit_code == 2


def test_image_modes_and_exif_orientation(checkpoint, tmp_path):
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[:, :30] = (200, 50, 20)
    cases = {
        "gray.png": Image.fromarray(rgb[..., 0], mode="L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((40, 60), 128, np.uint8)]), "RGBA"),
        "wide.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
    }
    assert cases["wide.png"].mode == "I;16"
    for name, image in cases.items():
        image.save(tmp_path / name)
        assert read_image(tmp_path / name).shape == (40, 60, 3), name
    # 16-bit samples are scaled to 8 bits, not clipped to white.
    wide = read_image(tmp_path / "wide.png")
    assert wide[0, 0, 0] == 200 and wide[0, 59, 0] == 0
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": displayed size is 40 wide, 60 tall
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (60, 40, 3)
    predictor = TorchRuntime.from_checkpoint(checkpoint, "cpu")
    for name in (*cases, "rotated.jpg"):
        [result] = predict_image(predictor, tmp_path / name, ["the red square"], tmp_path / "o")
        expected = (40, 60) if name == "rotated.jpg" else (60, 40)
        assert Image.open(result.mask).size == expected, name
        assert Image.open(result.overlay).mode == "RGB"


def test_long_phrase_is_truncated_with_a_warning(checkpoint, photo, tmp_path, caplog):
    predictor = TorchRuntime.from_checkpoint(checkpoint, "cpu")
    phrase = " ".join(["word"] * (predictor.tokenizer.max_len + 5))
    with caplog.at_level(logging.WARNING, logger="vipa.inference.runtime"):
        [result] = predict_image(predictor, photo, [phrase], tmp_path)
    assert "truncated" in caplog.text
    assert Path(result.mask).is_file()


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_image(tmp_path)


def test_ranks_preparing_one_output_folder_at_once_do_not_trip_each_other(tmp_path):
    """torchrun ranks all prove the same --out writable at the same moment."""
    from concurrent.futures import ThreadPoolExecutor

    from vipa.inference.io import prepare_output_dir

    def prepare(_: int) -> None:
        for _ in range(200):
            prepare_output_dir(tmp_path / "out")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(prepare, range(4)))
    assert list((tmp_path / "out").iterdir()) == []  # no probe left behind


def test_a_phrase_of_mostly_unknown_words_warns_once_in_one_line(photo, tmp_path, caplog):
    """A fitted vocabulary: words the training data never used get one warning per phrase."""
    from vipa.config import EncoderConfig, ModelConfig
    from vipa.model import VipaModel

    model = VipaModel(ModelConfig(encoder=EncoderConfig(name="swin-bert", preset="micro"),
                                  image_size=64))
    model.encoder.tokenizer.fit(["the leftmost circle", "the red square at the top"] * 3)
    runtime = TorchRuntime(model, "cpu")
    with caplog.at_level(logging.WARNING, logger="vipa.inference.runtime"):
        for _ in range(2):
            predict_image(runtime, photo, ["the zebra, farthest away", "the leftmost circle",
                                           "the red zebra"], tmp_path)
    notes = [r.getMessage() for r in caplog.records if "vocabulary" in r.getMessage()]
    assert notes == ["3 of the 4 words of 'the zebra, farthest away' are not in this model's "
                     "vocabulary (zebra, farthest, away): its training data never used them, "
                     "so the mask is a guess"]  # once; 1 of 3 unknown is not "most"
    assert runtime.unknown_words_note("the red square") is None


def test_a_folder_glob_or_list_of_images_gives_coco_results(checkpoint, photo, tmp_path):
    """Every phrase on every image; a corrupt image is reported and skipped (exit 1)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(photo).save(folder / "a.jpg")
    Image.open(photo).resize((120, 80)).save(folder / "b.png")
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = invoke("predict", str(folder), "the astronaut", "the flag", "--checkpoint",
                    str(checkpoint), "--out", str(out), "--device", "cpu", "--json",
                    "--no-progress")
    assert result.exit_code == 1, result.output
    assert "c.jpg" in result.stderr and "1 image(s) could not be read" in result.stderr
    records = json.loads((out / "results.json").read_text())
    assert [(r["image_id"], Path(r["file_name"]).name, r["text"]) for r in records] == [
        (1, "a.jpg", "the astronaut"), (1, "a.jpg", "the flag"),
        (2, "b.png", "the astronaut"), (2, "b.png", "the flag")]
    for record in records:  # the RLE is the PNG vipa predict wrote, at the image's size
        rle = {"size": record["segmentation"]["size"],
               "counts": record["segmentation"]["counts"].encode()}
        written = np.asarray(Image.open(record["mask"])) > 0
        assert np.array_equal(mask_utils.decode(rle).astype(bool), written)
        assert record["area"] == int(written.sum())
    truth = COCO()
    truth.dataset = {"images": [{"id": 1, "height": 200, "width": 300},
                                {"id": 2, "height": 80, "width": 120}],
                     "annotations": [], "categories": [{"id": 1, "name": "referent"}]}
    truth.createIndex()
    assert len(truth.loadRes(str(out / "results.json")).getAnnIds()) == 4

    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nphotos/a.jpg\n\nphotos/b.png\n")
    for spec in (f"@{listing}", str(folder / "a.*"), str(tmp_path / "**" / "b.png"),
                 str(folder / "[ab].*")):
        again = invoke("predict", spec, "the flag", "--checkpoint", str(checkpoint), "--out",
                       str(tmp_path / "again"), "--device", "cpu", "--no-progress")
        assert again.exit_code == 0, (spec, again.output)
    unquoted = invoke("predict", str(folder / "a.jpg"), str(folder / "b.png"), "the flag",
                      "--checkpoint", str(checkpoint))
    assert unquoted.exit_code == 2 and "quote a glob" in unquoted.stderr
    empty = invoke("predict", str(tmp_path / "*.gif"), "the flag", "--checkpoint",
                   str(checkpoint))
    assert empty.exit_code == 1 and "names no image files" in empty.stderr


@pytest.fixture(scope="module")
def swin_checkpoint(data_root, tmp_path_factory) -> Path:
    """swin-bert micro with its BERT text tower, 2 steps: the encoder whose libraries talk."""
    options = {"encoder": "swin-bert", "preset": "micro", "fusion": "early",
               "data_root": data_root, "image_size": 64, "batch_size": 2, "max_steps": 2,
               "device": "cpu", "output": tmp_path_factory.mktemp("swin")}
    cfg = resolve_config("cpu", options, ["train.val_every=1000", "train.checkpoint_every=2",
                                          "data.max_val_samples=2", "train.time_budget=null"])
    return train(cfg, progress=False).last


def test_predict_prints_only_its_own_lines(swin_checkpoint, photo, tmp_path):
    """No library warning or log line on a working command (first run and cached run)."""
    env = {**os.environ, "VIPA_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "vipa_cli", "predict", str(photo), "the red circle",
               "--checkpoint", str(swin_checkpoint), "--out", str(tmp_path / "o")]
    for _ in range(2):  # the first run builds the fast-start copy, the second loads it
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert done.stdout.count("\n") == 1 and "the red circle" in done.stdout
    bad = subprocess.run([*command[:5], "   ", *command[6:]], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_eval_writes_coco_results_that_match_its_png_masks(checkpoint, data_root, tmp_path):
    from pycocotools import mask as mask_utils

    args = ["eval", "--checkpoint", str(checkpoint), "--data", "synthetic", "--data-root",
            str(data_root), "--device", "cpu", "--split", "val", "--no-progress",
            "--save-predictions"]
    png = invoke(*args, str(tmp_path / "png"))
    coco = invoke(*args, str(tmp_path / "coco"), "--format", "coco")
    assert png.exit_code == 0 and coco.exit_code == 0, coco.output
    records = json.loads((tmp_path / "coco" / "results.json").read_text())
    assert len(records) == 6 and {r["category_id"] for r in records} == {1}
    for record in records:
        rle = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
        written = np.asarray(Image.open(tmp_path / "png" / f"{record['sent_id']}.png")) > 0
        assert np.array_equal(mask_utils.decode(rle).astype(bool), written)
        assert record["area"] == int(written.sum()) and len(record["bbox"]) == 4
    bad = invoke(*args, str(tmp_path / "x"), "--format", "xml")
    assert bad.exit_code == 2 and "unknown prediction format" in bad.stderr


TWO_PHRASES = ["the astronaut", "the red flag on the left"]


def _runs(checkpoint, photo, tmp_path, options: dict[str, TorchOptions]):
    """Each option set's runtime and its predictions of TWO_PHRASES on the photo."""
    runs = {}
    for name, option in options.items():
        runtime = TorchRuntime.from_checkpoint(checkpoint, "cpu", option)
        runs[name] = runtime, predict_image(runtime, photo, TWO_PHRASES, tmp_path / name)
    return runs


def _assert_same_masks(plain, other, score_tol: float) -> None:
    for a, b in zip(plain, other, strict=True):
        assert np.array_equal(np.asarray(Image.open(a.mask)), np.asarray(Image.open(b.mask)))
        assert abs(a.score - b.score) < score_tol


def _assert_export_refuses(photo, tmp_path, flag: str) -> None:
    """``flag`` with an exported model is refused in one line, before the file is read."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"")
    result = runner.invoke(app, ["predict", str(photo), "flag", "--model", str(onnx),
                                 flag, "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and f"{flag} runs a checkpoint" in result.output


def test_compile_gives_the_eager_masks_and_refuses_an_export(checkpoint, photo, tmp_path):
    """A compiled runtime (aot_eager here: inductor's code generation takes minutes on 2
    cores) pads phrases to max_len and gives the eager masks; --compile with an exported
    model is refused in one line."""
    runs = _runs(checkpoint, photo, tmp_path, {"eager": TorchOptions(),
                                               "compiled": TorchOptions(compile="aot_eager")})
    runtime = runs["compiled"][0]
    ids, _ = runtime.tokenize(["flag"])
    assert ids.shape == (1, runtime.tokenizer.max_len)
    _assert_same_masks(runs["eager"][1], runs["compiled"][1], 1e-4)
    _assert_export_refuses(photo, tmp_path, "--compile")


def test_channels_last_gives_the_same_masks(checkpoint, photo, tmp_path):
    """--channels-last: convolution weights and images in NHWC memory, the same masks and
    scores; refused for an export, which runs as it was exported."""
    runs = _runs(checkpoint, photo, tmp_path, {"plain": TorchOptions(),
                                               "nhwc": TorchOptions(channels_last=True)})
    convs = [m for m in runs["nhwc"][0].model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last)
                         for c in convs)
    _assert_same_masks(runs["plain"][1], runs["nhwc"][1], 1e-5)
    _assert_export_refuses(photo, tmp_path, "--channels-last")


def test_bf16_precision_gives_nearly_the_fp32_masks(checkpoint, photo, tmp_path):
    """--precision bf16: weights and activations in bfloat16, outputs float32; the masks
    agree with fp32 but for edge pixels; a precision vipa lacks is one line."""
    records = {}
    for precision in ("fp32", "bf16"):
        result = invoke("predict", str(photo), "the astronaut", "the red flag", "--checkpoint",
                        str(checkpoint), "--out", str(tmp_path / precision), "--device", "cpu",
                        "--json", "--precision", precision)
        assert result.exit_code == 0, result.output
        records[precision] = [json.loads(line) for line in result.stdout.splitlines()]
    for full, half in zip(records["fp32"], records["bf16"], strict=True):
        differ = np.asarray(Image.open(full["mask"])) != np.asarray(Image.open(half["mask"]))
        assert differ.mean() < 0.02 and abs(full["score"] - half["score"]) < 0.05
    runtime = TorchRuntime.from_checkpoint(checkpoint, "cpu", TorchOptions(precision="bf16"))
    assert next(runtime.model.parameters()).dtype == torch.bfloat16
    bad = runner.invoke(app, ["predict", str(photo), "flag", "--checkpoint", str(checkpoint),
                              "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "precision must be one of fp32, bf16" in bad.output
