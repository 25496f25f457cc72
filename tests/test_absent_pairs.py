"""`data.absent_pairs`: one-object phrases shown on images that lack their class, as no-match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_train_args
from typer.testing import CliRunner

from vipa.data.absent import AbsentPairs
from vipa.data.dataset import RISDataset
from vipa.data.manifest import ManifestIndex
from vipa.data.synthetic import generate_synthetic
from vipa.errors import ConfigError
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=4, n_train=24, n_val=6,
                              n_test=2, image_size=48)


def _train(root: Path, share: float, epoch: int = 0) -> RISDataset:
    dataset = RISDataset(root, "synthetic", split="train", image_size=32, train=True, seed=1,
                         absent_pairs=share)
    dataset.set_epoch(epoch)
    return dataset


def test_a_swapped_sample_shows_its_phrase_on_an_image_without_its_class(synthetic):
    dataset = _train(synthetic, 0.9)
    classes: dict[int, set[int]] = {}
    for ann in dataset.index.annotations.values():
        classes.setdefault(ann["image_id"], set()).add(ann["category_id"])
    split_images = {s.image_id for s in dataset.items}
    swapped = 0
    for i, sample in enumerate(dataset.items):
        item = dataset[i]
        if item["image_id"] == sample.image_id:
            assert item["mask"].sum() > 0 and item["targets"] == 1
            continue
        swapped += 1
        assert item["image_id"] in split_images  # the same split: no val image leaks in
        assert sample.category_id not in classes[item["image_id"]]
        assert item["mask"].sum() == 0 and item["targets"] == 0
        assert item["sent_id"] == sample.sent_id
    assert swapped > len(dataset) // 2


def test_the_draws_repeat_per_seed_and_epoch_and_leave_augmentation_alone(synthetic):
    plain, paired = _train(synthetic, 0.0), _train(synthetic, 0.5)
    first = [paired[i]["image_id"] for i in range(len(paired))]
    assert first == [_train(synthetic, 0.5)[i]["image_id"] for i in range(len(paired))]
    assert first != [_train(synthetic, 0.5, epoch=1)[i]["image_id"] for i in range(len(paired))]
    kept = [i for i in range(len(paired)) if first[i] == paired.items[i].image_id]
    assert kept and len(kept) < len(paired)
    for i in kept:  # an unswapped sample is the sample the run without the option sees
        assert torch.equal(paired[i]["image"], plain[i]["image"])
        assert paired[i]["text"] == plain[i]["text"]


def test_a_dataset_without_classes_or_a_share_out_of_range_is_refused(synthetic, tmp_path):
    with pytest.raises(ConfigError, match="needs object categories"):
        AbsentPairs(ManifestIndex(root=tmp_path), [], 0.3)
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        _train(synthetic, 1.0)
    run = tmp_path / "run"
    refused = runner.invoke(app, tiny_train_args(synthetic, run, "data.absent_pairs=1.5"))
    assert refused.exit_code != 0
    assert "data.absent_pairs" in refused.output and "Traceback" not in refused.output


def test_training_with_absent_pairs_records_the_option(synthetic, tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(app, tiny_train_args(synthetic, run, "data.absent_pairs=0.5",
                                                 "train.warmup_steps=0"))
    assert trained.exit_code == 0, trained.output
    assert "absent_pairs: 0.5" in (run / "config.yaml").read_text()
