"""`loss.category`: every object's class as a per-cell target, from the data to the loss."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_args
from typer.testing import CliRunner

from vipa.checkpoint import load_model
from vipa.data.categories import CategoryMaps
from vipa.data.dataset import RISDataset
from vipa.data.manifest import ManifestIndex
from vipa.data.synthetic import generate_synthetic
from vipa.errors import ConfigError
from vipa.model.losses import category_loss
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=5, n_train=16, n_val=4,
                              n_test=2, image_size=48)


def _train(root: Path, flip: float) -> RISDataset:
    dataset = RISDataset(root, "synthetic", split="train", image_size=48, train=True, seed=2,
                         category_maps=True)
    dataset.augment.hflip_p = flip
    return dataset


def test_every_object_is_painted_with_its_class_and_the_referent_under_its_mask(synthetic):
    dataset = _train(synthetic, 0.0)
    maps = dataset.categories
    assert maps.classes == len(dataset.index.categories)
    for i, sample in enumerate(dataset.items[:12]):
        item = dataset[i]
        labels, mask = item["categories"], item["mask"][0] > 0.5
        assert labels.shape == mask.shape and labels.dtype == torch.int64
        assert set(labels[mask].unique().tolist()) == {maps.label[sample.category_id]}
        painted = set(labels.unique().tolist()) - {0}
        on_image = {maps.label[a["category_id"]] for a in maps.on_image[sample.image_id]}
        assert painted <= on_image and painted  # a small object may vanish at 48 px


def test_the_class_map_flips_with_the_image_and_the_mask(synthetic):
    plain, flipped = _train(synthetic, 0.0), _train(synthetic, 1.0)
    for i in range(6):
        a, b = plain[i], flipped[i]
        assert torch.equal(a["categories"].flip(-1), b["categories"])
        assert torch.equal(a["mask"].flip(-1), b["mask"])


def test_a_smaller_object_on_a_larger_one_keeps_its_class(synthetic):
    maps = CategoryMaps(RISDataset(synthetic, "synthetic", split="train").index)
    image_id = next(iter(maps.on_image))
    big, small = maps.on_image[image_id][:2]
    info = maps.index.images[image_id]
    w, h = info["width"], info["height"]
    whole = [0, 0, w, 0, w, h, 0, h]
    corner = [0, 0, w / 4, 0, w / 4, h / 4, 0, h / 4]
    saved = big["segmentation"], small["segmentation"]
    try:  # the small object listed first, so only the size decides the order
        big["segmentation"], small["segmentation"] = [whole], [corner]
        maps.on_image[image_id][:2] = [small, big]
        labels = maps.paint(image_id)
    finally:
        big["segmentation"], small["segmentation"] = saved
        maps.on_image[image_id][:2] = [big, small]
    assert labels[1, 1] == maps.label[small["category_id"]]
    assert labels[h - 2, w - 2] == maps.label[big["category_id"]]


def test_the_loss_scores_each_cells_class_shares():
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    labels[0, :4, :4] = 2  # cell (0, 0) of a 2 x 2 grid: class 2
    labels[0, 4:, :2] = 1  # half of cell (1, 0): class 1, the rest background
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, 0] = 20.0
    logits[0, 0, :, 1] = 20.0
    logits[0, :2, 1, 0] = 20.0  # even odds on background and class 1: the cell's shares
    expected = (0 + 0 + 0 + math.log(2)) / 4  # cross-entropy of 0.5/0.5 against itself
    torch.testing.assert_close(category_loss(logits, labels), torch.tensor(expected),
                               atol=1e-6, rtol=0)
    assert category_loss(-logits, labels) > 10


def test_training_with_the_category_loss_keeps_its_head_in_the_checkpoint(synthetic, tmp_path):
    run = tmp_path / "run"
    trained = runner.invoke(app, tiny_train_args(synthetic, run, "loss.category=0.5",
                                                 "train.log_every=1"))
    assert trained.exit_code == 0, trained.output
    assert "category" in (run / "metrics.jsonl").read_text()
    model, meta = load_model(run / "last.safetensors", torch.device("cpu"))
    assert meta.model_config.categories == 4 and meta.model_config.loss.category == 0.5
    assert model.category_head is not None and model.category_head.out_channels == 5
    images = torch.rand(1, 3, 32, 32)
    ids, mask = model.tokenize(["the red circle"])
    assert model.eval()(images, ids, mask).categories is None  # training only
    assert model.train()(images, ids, mask).categories.shape == (1, 5, 2, 2)


def test_a_negative_weight_or_maps_without_classes_are_refused_in_one_line(synthetic, tmp_path):
    with pytest.raises(ConfigError, match="loss.category needs object categories"):
        CategoryMaps(ManifestIndex(root=tmp_path))
    refused = runner.invoke(app, tiny_train_args(synthetic, tmp_path / "run", "loss.category=-1"))
    assert refused.exit_code != 0
    assert "loss.category" in refused.output and "Traceback" not in refused.output


def test_fine_tuning_on_data_with_other_classes_starts_the_head_afresh(synthetic, tmp_path):
    start = tmp_path / "start"
    trained = runner.invoke(app, tiny_train_args(synthetic, start, "loss.category=0.5"))
    assert trained.exit_code == 0, trained.output
    other = tmp_path / "other"
    shutil.copytree(synthetic, other)
    instances = other / "synthetic" / "instances.json"
    data = json.loads(instances.read_text())
    data["categories"].append({"id": 99, "name": "hexagon", "supercategory": "shape"})
    instances.write_text(json.dumps(data))
    args = tiny_train_args(other, tmp_path / "tuned", "loss.category=0.5")
    args = [a for a in args if a not in ("--preset", "micro")]  # the checkpoint's model
    tuned = runner.invoke(app, [*args, "--init-from", str(start / "last.safetensors")])
    assert tuned.exit_code == 0, tuned.output
    model, meta = load_model(tmp_path / "tuned" / "last.safetensors", torch.device("cpu"))
    assert meta.model_config.categories == 5 and model.category_head.out_channels == 6
