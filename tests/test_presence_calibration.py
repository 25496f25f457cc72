"""The presence threshold fitted on the validation split (train.presence_calibration)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_generalized import train_tiny, write_grefcoco
from torch.utils.data import DataLoader

from vipa.checkpoint import load_model, read_checkpoint
from vipa.config import RunConfig, apply_overrides, load_config
from vipa.config.validate import validate_run
from vipa.data.build import build_dataset, evenly_spaced
from vipa.data.dataset import collate
from vipa.data.synthetic import generate_synthetic
from vipa.errors import ConfigError
from vipa.evaluation.evaluate import evaluate
from vipa.model import build_model
from vipa.training.calibration import balanced_threshold


def test_a_separable_split_puts_the_threshold_between_the_two_kinds():
    threshold, n_acc, t_acc = balanced_threshold(np.array([1.0, 2.0, 3.0]),
                                                 np.array([-2.0, -1.0, 0.0]))
    assert (threshold, n_acc, t_acc) == (0.5, 1.0, 1.0)


def test_the_balanced_threshold_is_the_best_of_every_threshold():
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(1.0, 1.0, 40), rng.normal(-0.5, 1.0, 15)
    threshold, n_acc, t_acc = balanced_threshold(positives, negatives)
    assert n_acc == np.mean(negatives < threshold) and t_acc == np.mean(positives >= threshold)
    for t in np.linspace(-4, 4, 801):
        assert min(np.mean(negatives < t), np.mean(positives >= t)) <= min(n_acc, t_acc)


def test_calibration_needs_a_presence_head():
    cfg = RunConfig(model=apply_overrides(RunConfig().model, []))
    cfg.train.presence_calibration = "balanced"
    with pytest.raises(ConfigError, match="presence_calibration.*needs a presence head"):
        validate_run(cfg)


def test_training_fits_best_checkpoints_threshold_on_the_val_split(tmp_path):
    """After `vipa train` with calibration, probability 0.5 in the saved model answers
    every no-match and matching phrase of the val split as the logged fit says, past the
    data.max_val_samples that the validations read."""
    synthetic = generate_synthetic(tmp_path / "synth", seed=3, n_train=16, n_val=6, n_test=2,
                                   image_size=48)
    root = write_grefcoco(synthetic, tmp_path / "gref")
    run = train_tiny(root, tmp_path / "run", 3, "model.presence=head",
                     "train.presence_calibration=balanced", "data.max_val_samples=4")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    [record] = [r for r in logged if "presence_calibration" in r]
    fit = record["presence_calibration"]
    checkpoint = read_checkpoint(run / "best.safetensors")
    assert checkpoint.model_config.presence_offset == fit["presence_offset"] != 0.0
    assert checkpoint.metrics == record["val"]
    model, _ = load_model(run / "best.safetensors")
    cfg = load_config(RunConfig, run / "config.yaml")  # the run's own validation split
    dataset = build_dataset(cfg, cfg.data.val_split, train=False, keep_original=True)
    assert record["val"]["samples"] == len(evenly_spaced(dataset, 4)) == 4 < len(dataset)
    rows: list[tuple[float, int]] = []
    evaluate(model, DataLoader(dataset, batch_size=8, collate_fn=collate),
             torch.device("cpu"), presence=rows)
    negatives = [logit for logit, count in rows if count == 0]
    positives = [logit for logit, count in rows if count != 0]
    assert (len(negatives), len(positives)) == (fit["no_match_phrases"],
                                                fit["matching_phrases"])
    assert np.mean(np.array(negatives) < 0) == pytest.approx(fit["n_acc"])
    assert np.mean(np.array(positives) >= 0) == pytest.approx(fit["t_acc"])


def test_the_offset_moves_the_presence_logit_and_the_answer_with_it():
    config = apply_overrides(RunConfig().model, [
        "encoder.name=tiny", "encoder.preset=micro", "image_size=32", "veg.k=4",
        "decoder.dim=16", "presence=head"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    images, (ids, mask) = torch.rand(2, 3, 32, 32), model.tokenize(["a", "b"])
    with torch.no_grad():
        plain = model(images, ids, mask).presence
        model.config = dataclasses.replace(config, presence_offset=float(plain.max()) + 1.0)
        shifted = model(images, ids, mask)
    torch.testing.assert_close(shifted.presence, plain - model.config.presence_offset)
    assert bool(shifted.absent().all()) and not shifted.answer().gt(0).any()
