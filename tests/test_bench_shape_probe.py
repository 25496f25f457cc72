"""bench.shape_probe: what a checkpoint's features say about each object's shape and colour."""

from __future__ import annotations

import pytest

from bench import shape_probe
from vipa.config import DataConfig, resolve_config
from vipa.data.synthetic import Obj, Scene, generate_synthetic
from vipa.training import train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train; see ``single_thread`` in conftest."""


def test_the_probes_score_every_stage_of_a_checkpoint_and_its_untrained_twin(tmp_path):
    root = generate_synthetic(tmp_path / "data", seed=2, n_train=30, n_val=16, n_test=2,
                              image_size=48)
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data_root": root,
               "image_size": 32, "batch_size": 4, "max_steps": 1, "device": "cpu",
               "output": tmp_path / "run"}
    cfg = resolve_config("cpu", options, ["veg.k=4", "decoder.dim=16", "train.warmup_steps=0",
                                          "train.val_every=100", "data.max_val_samples=2"])
    checkpoint = train(cfg, progress=False).run_dir / "last.safetensors"
    result = shape_probe.run(checkpoint, DataConfig(name="synthetic", root=str(root)), 30, 16)
    assert 0 < result["train_pictures"] <= 30 and 0 < result["val_pictures"] <= 16
    stages = [key for key in result if key.startswith("stride")]
    assert len(stages) == 4
    for key in stages:
        for row in result[key].values():  # trained, untrained
            assert all(row[s] is None or 0 <= row[s] <= 1
                       for s in ("circle", "square", "triangle", "star"))
            assert 0 <= row["object_shape_accuracy"] <= 1
            assert 0 <= row["object_colour_accuracy"] <= 1
    needed = result["train_shape_needed"]
    assert set(needed) <= {"attribute", "position", "relation"} and needed
    assert all(0 <= share <= 1 for share in needed.values())
    split = shape_probe.by_need(checkpoint, DataConfig(name="synthetic", root=str(root)),
                                "val", 40)
    assert 0 < sum(row["samples"] for row in split.values()) <= 40
    for group, row in split.items():
        kind, need = group.split("/")
        assert kind in needed and need in {"needs shape", "shape redundant"}
        assert 0 <= row["mIoU"] <= 1 and 0 <= row["P@0.5"] <= 1


def test_a_phrase_needs_its_shape_word_only_where_another_object_shares_the_rest():
    def obj(shape, colour, x):
        return Obj(shape=shape, colour=colour, size="small", texture="plain", x=x, y=50,
                   radius=8)

    same_colour = Scene((obj("circle", "red", 20), obj("square", "red", 80)), 100)
    other_colour = Scene((obj("circle", "red", 20), obj("square", "blue", 80)), 100)
    assert shape_probe.needs_shape("the red circle", same_colour) == ("attribute", True)
    assert shape_probe.needs_shape("the red circle", other_colour) == ("attribute", False)
    assert shape_probe.needs_shape("the leftmost red circle", same_colour) == ("position",
                                                                               False)
    assert shape_probe.needs_shape("no such phrase", same_colour) is None
