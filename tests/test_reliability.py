"""The catalogue of bad inputs and faults (docs/reliability.md): one line, an exit code, no loss.

Every case runs a real command through the Typer app and checks the same
four things: the exit code, that the output is exactly one line starting
with ``error:``, that no traceback is printed, and that the files a run had
written before (its checkpoint and resume state) are byte for byte the same.
"""

from __future__ import annotations

import errno
import hashlib
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vipa.config import resolve_config
from vipa.data.synthetic import generate_synthetic
from vipa.training import train
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These cases train small models; see ``single_thread`` in conftest."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A synthetic set, a trained tiny run (checkpoint + resume state) and a photo."""
    base = tmp_path_factory.mktemp("reliability")
    root = generate_synthetic(base / "data", seed=4, n_train=24, n_val=6, n_test=4,
                              image_size=64)
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data_root": root,
               "image_size": 64, "batch_size": 4, "max_steps": 4, "device": "cpu",
               "output": base / "run"}
    cfg = resolve_config("cpu", options, ["veg.k=4", "decoder.dim=16", "train.warmup_steps=0",
                                          "train.checkpoint_every=2", "data.max_val_samples=4"])
    result = train(cfg, progress=False)
    photo = base / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(photo)
    return {"base": base, "root": root, "run": result.run_dir, "ckpt": result.last,
            "photo": photo}


@dataclass
class Case:
    """One catalogue entry: what to run, the exit code and the words its line must hold."""

    name: str
    args: Callable[[dict[str, Path], Path], list[str]]
    code: int
    needle: str
    setup: Callable[[dict[str, Path], Path], None] | None = None


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _train(w: dict[str, Path], *more: str) -> list[str]:
    return ["train", "--encoder", "tiny", "--preset", "micro", "--data-root", str(w["root"]),
            "--image-size", "64", "--device", "cpu", "--no-progress", *more]


def _safetensors(path: Path, metadata: dict[str, str], tensors: dict | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file(tensors or {"w": torch.zeros(2)}, str(path), metadata=metadata)
    return path


def _checkpoint_with(w: dict[str, Path], tmp: Path, **changes: str) -> Path:
    """A copy of the run's checkpoint with some metadata entries replaced."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(w["ckpt"]), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(str(w["ckpt"]))
    if changes.pop("drop_tensor", None):
        tensors.pop(sorted(tensors)[0])
    metadata.update(changes)
    return _safetensors(tmp / "changed.safetensors", metadata, tensors)


def _truncated_jpeg(tmp: Path) -> Path:
    path = tmp / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path, quality=90)
    return _write(path, path.read_bytes()[:300])


def _huge_png(tmp: Path) -> Path:
    """A PNG whose header claims 20000 x 20000 pixels (its data is never decoded)."""
    path = tmp / "huge.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the chunk's CRC
    return _write(path, bytes(data))


CASES = [
    # ---- vipa train: config values (exit 2)
    Case("train batch size 0", lambda w, t: _train(w, "--batch-size", "0"), 2,
         "train.batch_size: 0 is not allowed"),
    Case("train image size -5", lambda w, t: _train(w, "--image-size", "-5"), 2,
         "model.image_size: -5 is not allowed"),
    Case("train epochs 0", lambda w, t: _train(w, "--epochs", "0"), 2,
         "train.epochs: 0 is not allowed"),
    Case("train veg.k=0", lambda w, t: _train(w, "--set", "veg.k=0"), 2,
         "model.veg.k: 0 is not allowed"),
    Case("train veg.k over the token grid", lambda w, t: _train(w, "--set", "veg.k=17"), 2,
         "token grid at 64 px"),
    Case("train threshold outside (0, 1)", lambda w, t: _train(w, "--set", "train.threshold=1.5"),
         2, "strictly between 0 and 1"),
    Case("train lr 0", lambda w, t: _train(w, "--lr", "0"), 2, "train.lr: 0.0 is not allowed"),
    Case("train grad_accum 0", lambda w, t: _train(w, "--set", "train.grad_accum=0"), 2,
         "train.grad_accum"),
    Case("train max_val_samples 0", lambda w, t: _train(w, "--set", "data.max_val_samples=0"),
         2, "data.max_val_samples"),
    Case("train unknown device", lambda w, t: _train(w, "--device", "tpu"), 2,
         "auto, cpu, cuda, cuda:N, N (GPU N) or mps"),
    Case("train device the machine lacks", lambda w, t: _train(w, "--device", "gpu"), 2,
         "is not available: this machine has cpu"),
    Case("train bad time budget", lambda w, t: _train(w, "--time-budget", "soon"), 2,
         "train.time_budget"),
    Case("train misspelt key", lambda w, t: _train(w, "--set", "veg.kk=3"), 2,
         "did you mean 'model.veg.k'"),
    Case("train value of the wrong type", lambda w, t: _train(w, "--set", "veg.k=many"), 2,
         "model.veg.k"),
    Case("train option of the wrong type", lambda w, t: _train(w, "--batch-size", "abc"), 2,
         "Invalid value for '--batch-size'"),
    Case("train override without =", lambda w, t: _train(w, "--set", "veg.k"), 2,
         "must look like key.path=value"),
    Case("train unknown encoder", lambda w, t: _train(w, "--encoder", "tinny"), 2,
         "did you mean 'tiny'"),
    Case("train unknown fusion", lambda w, t: _train(w, "--fusion", "middle"), 2,
         "unknown fusion 'middle'"),
    Case("train preset the encoder lacks",
         lambda w, t: ["train", "--encoder", "effnet-minilm", "--preset", "micro"], 2,
         "its presets: lite0"),
    Case("train unknown recipe", lambda w, t: _train(w, "--config", "fast"), 2,
         "unknown config preset 'fast'"),
    Case("train missing config file",
         lambda w, t: _train(w, "--config", str(t / "none.yaml")), 2, "does not exist"),
    Case("train YAML syntax error", lambda w, t: _train(w, "--config", str(t / "bad.yaml")), 2,
         "bad.yaml:3:1: not valid YAML",
         setup=lambda w, t: _write(t / "bad.yaml", "model:\n  veg: {k: 4\n")),
    Case("train JSON syntax error", lambda w, t: _train(w, "--config", str(t / "bad.json")), 2,
         "bad.json:1:", setup=lambda w, t: _write(t / "bad.json", '{"model": }')),
    Case("train RefCOCO without a data root", lambda w, t: ["train", "--data", "refcoco"], 2,
         "needs --data-root"),
    Case("train unknown dataset", lambda w, t: _train(w, "--data", "coco"), 2,
         "unknown dataset 'coco'"),
    Case("train missing data root",
         lambda w, t: ["train", "--data", "refcoco", "--data-root", str(t / "nowhere")], 1,
         "does not exist"),
    # ---- vipa train: runs, resume, faults (exit 1 unless a usage error)
    Case("resume with no run", lambda w, t: ["train", "--resume", "--output", str(t / "r")], 1,
         "nothing to resume"),
    Case("resume with a changed model",
         lambda w, t: ["train", "--resume", "--output", str(w["run"]), "--image-size", "96"], 2,
         "model.image_size (64 -> 96)"),
    Case("resume with another seed",
         lambda w, t: ["train", "--resume", "--output", str(w["run"]), "--seed", "7"], 2,
         "train.seed (0 -> 7)"),
    Case("resume a corrupt checkpoint",
         lambda w, t: ["train", "--resume", "--output", str(t / "broken")], 1, "corrupt",
         setup=lambda w, t: _write(t / "broken" / "last.safetensors", b"\0" * 64)),
    # ---- vipa eval / export: checkpoints from elsewhere
    Case("eval missing checkpoint", lambda w, t: ["eval", "-c", str(t / "none.safetensors")], 1,
         "does not exist"),
    Case("eval corrupt checkpoint", lambda w, t: ["eval", "-c", str(t / "c.safetensors")], 1,
         "corrupt", setup=lambda w, t: _write(t / "c.safetensors", b"not a checkpoint")),
    Case("eval non-vipa safetensors", lambda w, t: ["eval", "-c", str(t / "other.safetensors")],
         1, "not a vipa checkpoint",
         setup=lambda w, t: _safetensors(t / "other.safetensors", {"format": "pt"})),
    Case("eval checkpoint of a newer format",
         lambda w, t: ["eval", "-c", str(t / "changed.safetensors")], 1, "upgrade vipa",
         setup=lambda w, t: _checkpoint_with(w, t, format_version="9")),
    Case("eval checkpoint with an unknown config key",
         lambda w, t: ["eval", "-c", str(t / "changed.safetensors")], 1,
         "unknown config key 'veg.sparkle'",
         setup=lambda w, t: _checkpoint_with(w, t, model_config=json.dumps(
             {"veg": {"sparkle": 1}}))),
    Case("eval checkpoint missing tensors",
         lambda w, t: ["eval", "-c", str(t / "changed.safetensors"), "--data-root",
                       str(w["root"]), "--no-progress"], 1, "does not fit the model: missing",
         setup=lambda w, t: _checkpoint_with(w, t, drop_tensor="1")),
    Case("eval unknown split",
         lambda w, t: ["eval", "-c", str(w["ckpt"]), "--split", "tesst", "--no-progress"], 2,
         "unknown split 'tesst'"),
    Case("export unknown format",
         lambda w, t: ["export", "-c", str(w["ckpt"]), "--format", "tflite", "-o",
                       str(t / "m")], 2, "unknown export format 'tflite'"),
    Case("export missing checkpoint",
         lambda w, t: ["export", "-c", str(t / "none.safetensors")], 1, "does not exist"),
    # ---- vipa predict: images, phrases, outputs
    Case("predict missing image",
         lambda w, t: ["predict", str(t / "no.jpg"), "dog", "-c", str(w["ckpt"])], 1,
         "missing image"),
    Case("predict not an image",
         lambda w, t: ["predict", str(t / "notes.jpg"), "dog", "-c", str(w["ckpt"])], 1,
         "corrupt image", setup=lambda w, t: _write(t / "notes.jpg", "just text\n")),
    Case("predict truncated JPEG",
         lambda w, t: ["predict", str(t / "cut.jpg"), "dog", "-c", str(w["ckpt"])], 1,
         "corrupt image", setup=lambda w, t: _truncated_jpeg(t)),
    Case("predict decompression bomb",
         lambda w, t: ["predict", str(t / "huge.png"), "dog", "-c", str(w["ckpt"])], 1,
         "over the limit", setup=lambda w, t: _huge_png(t)),
    Case("predict a folder without images",
         lambda w, t: ["predict", str(t), "dog", "-c", str(w["ckpt"])], 1,
         "names no image files"),
    Case("predict empty phrase",
         lambda w, t: ["predict", str(w["photo"]), "dog", "  ", "-c", str(w["ckpt"])], 2,
         "phrase 2 is empty"),
    Case("predict without a phrase", lambda w, t: ["predict", str(w["photo"])], 2,
         "give an IMAGE and at least one TEXT"),
    Case("predict --model and --checkpoint",
         lambda w, t: ["predict", str(w["photo"]), "dog", "-c", str(w["ckpt"]), "--model",
                       str(t / "m.onnx")], 2, "not both"),
    Case("predict threshold outside (0, 1)",
         lambda w, t: ["predict", str(w["photo"]), "dog", "-c", str(w["ckpt"]),
                       "--threshold", "2"], 2, "--threshold"),
    Case("predict unwritable output",
         lambda w, t: ["predict", str(w["photo"]), "dog", "-c", str(w["ckpt"]), "--out",
                       str(t / "file" / "sub")], 1, "cannot write predictions",
         setup=lambda w, t: _write(t / "file", "")),
    Case("predict bad batch line",
         lambda w, t: ["predict", "--batch", str(t / "r.jsonl"), "-c", str(w["ckpt"])], 1,
         "r.jsonl:1", setup=lambda w, t: _write(t / "r.jsonl", '{"image": "x.jpg"}\n')),
    Case("predict exported model without its sidecar",
         lambda w, t: ["predict", str(w["photo"]), "dog", "--model", str(t / "m.onnx")], 1,
         "vipa.json is missing", setup=lambda w, t: _write(t / "m.onnx", b"onnx")),
    # ---- vipa data
    Case("data show index out of range",
         lambda w, t: ["data", "show", "--data-root", str(w["root"]), "--index", "999",
                       "--out", str(t / "s.png")], 2, "out of range"),
    Case("data stats without a RefCOCO root", lambda w, t: ["data", "stats", "--data",
                                                            "refcoco"], 1, "no data root"),
    Case("data synth into a file",
         lambda w, t: ["data", "synth", "--out", str(t / "file" / "x"), "--n-train", "2",
                       "--n-val", "1", "--n-test", "1"], 1, "",
         setup=lambda w, t: _write(t / "file", "")),
]


def _fingerprint(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.glob("*")) if p.suffix in (".safetensors", ".pt")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code(case, world, tmp_path):
    if case.setup is not None:
        case.setup(world, tmp_path)
    before = _fingerprint(world["run"])
    result = runner.invoke(app, case.args(world, tmp_path))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == case.code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert case.needle in lines[0], lines[0]
    assert _fingerprint(world["run"]) == before  # nothing written before is lost


def test_the_catalogue_is_complete_and_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    assert len(CASES) >= 40
    for case in CASES:
        assert f"`{case.name}`" in text, case.name


def _expect_one_line(result, code: int, needle: str) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert "Traceback" not in result.output
    return lines[0]


def test_a_second_training_into_a_live_run_is_refused(world):
    from vipa.training.runs import run_lock

    before = _fingerprint(world["run"])
    with run_lock(world["run"]):  # what a live `vipa train` in that folder holds
        result = runner.invoke(app, ["train", "--resume", "--output", str(world["run"]),
                                     "--no-progress"])
    _expect_one_line(result, 1, "is being written by another vipa train (pid")
    assert _fingerprint(world["run"]) == before


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    import signal
    import subprocess
    import sys

    from vipa.training.runs import run_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from vipa.training.runs import run_lock\n"
        f"with run_lock(Path({str(tmp_path / 'run')!r})):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert "pid" in (tmp_path / "run" / ".vipa.lock").read_text()  # left behind
    with run_lock(tmp_path / "run"):
        pass  # taken over: the kernel dropped the dead process's flock


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(world, tmp_path,
                                                                       monkeypatch):
    import shutil

    import vipa.checkpoint

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    before = _fingerprint(run)

    def full_disk(tensors, filename, metadata=None):  # noqa: ANN001
        Path(filename).write_bytes(b"partial")  # some bytes made it, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vipa.checkpoint, "save_file", full_disk)
    result = runner.invoke(app, ["train", "--resume", "--output", str(run), "--max-steps", "8",
                                 "--no-progress"])
    _expect_one_line(result, 1, "No space left on device; the previous one is kept")
    weights = {k: v for k, v in before.items() if k.endswith(".safetensors")}
    assert {k: v for k, v in _fingerprint(run).items() if k.endswith(".safetensors")} == weights
    from vipa.checkpoint import load_resume_state, read_checkpoint

    load_resume_state(run / "last.safetensors", read_checkpoint(run / "last.safetensors").step)
    assert not list(run.glob(".*.tmp"))
    monkeypatch.undo()
    resumed = runner.invoke(app, ["train", "--resume", "--output", str(run), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output  # the kept resume point still loads


def test_a_real_full_filesystem_keeps_the_previous_checkpoint(world, tmp_path):
    """The same on a small, nearly full tmpfs, where the machine lets us mount one."""
    import shutil
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        run = mount / "run"
        run.mkdir()
        for path in (world["run"] / "config.yaml", world["run"] / "last.safetensors",
                     *world["run"].glob("last.state-*.pt")):
            shutil.copy(path, run / path.name)
        filler = mount / "filler"
        free = shutil.disk_usage(mount).free
        filler.write_bytes(b"\0" * max(0, free - 64 * 1024))  # leave 64 KiB: too little
        before = _fingerprint(run)
        result = runner.invoke(app, ["train", "--resume", "--output", str(run),
                                     "--max-steps", "8", "--no-progress"])
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.output and "Traceback" not in result.output
        assert len([x for x in result.output.splitlines() if x.strip()]) == 1
        assert {k: v for k, v in _fingerprint(run).items() if k.endswith(".safetensors")} \
            == {k: v for k, v in before.items() if k.endswith(".safetensors")}
        from vipa.checkpoint import load_resume_state, read_checkpoint

        step = read_checkpoint(run / "last.safetensors").step
        load_resume_state(run / "last.safetensors", step)  # the resume point still loads
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_images_of_every_mode_train_evaluate_and_predict(world, tmp_path):
    """CMYK, palette with transparency, 16-bit and EXIF-rotated files read alike everywhere."""
    from vipa.data.images import read_image

    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:, :25] = (200, 40, 20)
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    cases = {
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "palette.png": palette,
        "wide.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        assert read_image(tmp_path / name).shape == (30, 50, 3), name
        result = runner.invoke(app, ["predict", str(tmp_path / name), "the red square", "-c",
                                     str(world["ckpt"]), "--out", str(tmp_path / "out"),
                                     "--json"])
        assert result.exit_code == 0, result.output
        assert Image.open(json.loads(result.stdout)["mask"]).size == (50, 30)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (50, 30, 3)
    # Training and evaluation read their images with the same function.
    from vipa.data import dataset

    assert dataset.read_image is read_image


def test_kill_9_at_any_moment_leaves_a_resume_point_that_loads(world, tmp_path):
    """Kill a training that checkpoints every step at several moments; each time resume works."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from vipa.checkpoint import load_resume_state, read_checkpoint

    run = tmp_path / "run"
    args = [sys.executable, "-m", "vipa_cli", "train", "--encoder", "tiny", "--preset", "micro",
            "--data-root", str(world["root"]), "--image-size", "64", "--batch-size", "4",
            "--device", "cpu", "--no-progress", "--output", str(run), "--max-steps", "400",
            "--set", "veg.k=4", "--set", "decoder.dim=16", "--set", "train.checkpoint_every=1",
            "--set", "train.val_every=1000", "--set", "data.max_val_samples=4"]
    def saved_step() -> int:
        try:
            return read_checkpoint(run / "last.safetensors").step
        except Exception:  # not written yet (the rename is atomic, so never half-written)
            return 0

    rng = random.Random(0)
    for attempt in range(4):
        resume = ["--resume"] if (run / "last.safetensors").is_file() else []
        before = saved_step()
        process = subprocess.Popen([*args, *resume], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        # Kill only once this process has written a checkpoint of its own: on a busy
        # machine a resumed run can still be importing after the random pause below.
        deadline = time.time() + 120
        while saved_step() <= before and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))  # somewhere in the middle of checkpoint writes
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoint = read_checkpoint(run / "last.safetensors")
        state = load_resume_state(run / "last.safetensors", checkpoint.step)
        assert state["step"] == checkpoint.step, attempt
    assert read_checkpoint(run / "last.safetensors").step > 1


def test_interrupted_resume_points_never_lose_the_state_of_the_weights(world, tmp_path):
    """Crashes between the state and the weights, twice in a row (a resumed run dying again)."""
    import shutil

    import torch

    import vipa.checkpoint as checkpoint

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    last = run / "last.safetensors"
    model, loaded = checkpoint.load_model(last)
    state = checkpoint.load_resume_state(last, loaded.step)
    for step in (loaded.step + 1, loaded.step + 2):  # each: state written, then killed
        buffer = {**state, "step": step}
        torch.save(buffer, checkpoint.state_path(last, step))
        assert checkpoint.read_checkpoint(last).step == loaded.step  # weights never moved
        assert checkpoint.load_resume_state(last, loaded.step)["step"] == loaded.step
    checkpoint.save_resume_point(last, model, state, step=loaded.step + 3, epoch=0)
    assert [p.name for p in run.glob("last.state-*.pt")] == [f"last.state-{loaded.step + 3}.pt"]


def test_a_nan_loss_stops_before_its_weights_are_saved_and_keeps_the_checkpoint(
        world, tmp_path, monkeypatch):
    import torch

    import vipa.training.session as session
    from vipa.checkpoint import read_checkpoint

    real = session.VipaLoss

    class BreaksAtStep3(real):
        calls = 0

        def forward(self, output, masks, categories=None):  # noqa: ANN001, ANN201
            losses = super().forward(output, masks, categories)
            BreaksAtStep3.calls += 1
            if BreaksAtStep3.calls == 3:
                return losses._replace(total=losses.total * float("nan"))
            return losses

    monkeypatch.setattr(session, "VipaLoss", BreaksAtStep3)
    run = tmp_path / "run"
    result = runner.invoke(app, [*_train(world, "--output", str(run), "--max-steps", "6",
                                         "--batch-size", "4"),
                                 "--set", "veg.k=4", "--set", "decoder.dim=16",
                                 "--set", "train.checkpoint_every=2"])
    _expect_one_line(result, 1,
                     "loss became nan at step 3; stopped before saving the weights it updated")
    saved = read_checkpoint(run / "last.safetensors")
    assert saved.step == 2 and all(torch.isfinite(t).all() for t in saved.tensors.values())
