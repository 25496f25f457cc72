"""Training logs for batch jobs and trackers: plain lines without a terminal, TensorBoard,
loggers from plugins."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from vipa.data.synthetic import generate_synthetic
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=4, n_train=16, n_val=4,
                              n_test=2, image_size=64)


def train_args(root: Path, output: Path, *extra: str) -> list[str]:
    return ["train", "--encoder", "tiny", "--preset", "micro", "--data-root", str(root),
            "--image-size", "32", "--batch-size", "4", "--max-steps", "4", "--device", "cpu",
            "--output", str(output), "--set", "veg.k=4", "--set", "decoder.dim=16",
            "--set", "train.log_every=2", "--set", "train.val_every=2",
            "--set", "data.max_val_samples=4", *extra]


def test_without_a_terminal_train_writes_plain_lines(data_root, tmp_path):
    """``vipa train > train.log 2>&1`` (a batch job): a line per log step and per validation,
    no live bar."""
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "vipa_cli",
                               *train_args(data_root, tmp_path / "run")],
                              stdout=handle, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    steps = [line for line in text.splitlines() if "] step " in line and " loss " in line]
    vals = [line for line in text.splitlines() if "] step " in line and " val mIoU " in line]
    assert [line.split("] step ")[1].split()[0] for line in steps] == ["2/4", "4/4"]
    assert all("lr " in line and "samples/s" in line and "eta " in line for line in steps)
    assert len(vals) == 2
    assert "━" not in text and "\r" not in text  # no bar


def test_tensorboard_logger_writes_scalars_and_images(data_root, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, [*train_args(data_root, run, "--logger", "tensorboard"),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "lr", "samples_per_s", "val/oIoU", "val/mIoU",
            "val/position/oIoU"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert [e.step for e in events.Scalars("val/oIoU")] == [2, 4]
    assert len(tags["images"]) == 4  # a few val predictions per validation


def test_a_plugin_logger_receives_the_run(data_root, tmp_path, example_plugin):  # noqa: F811
    """The example plugin's ``register_loggers`` CSV logger, selected by name."""
    run = tmp_path / "run"
    result = runner.invoke(app, [*train_args(data_root, run, "--logger", "example-csv"),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader((run / "example-log.csv").open()))
    names = {name for _, name, _ in rows}
    assert {"train/loss", "val/oIoU"} <= names
    listing = runner.invoke(app, ["plugins"])
    assert "example-csv" in listing.output


def test_an_unknown_logger_fails_in_one_line_before_training(data_root, tmp_path):
    result = runner.invoke(app, train_args(data_root, tmp_path / "run", "--logger", "wandbb"))
    assert result.exit_code == 2
    assert "unknown logger 'wandbb'" in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
