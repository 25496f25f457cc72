"""bench.presence: presence answers per target kind and per kind of no-match phrase."""

from __future__ import annotations

import pytest
import torch

from bench import presence, presence_probe
from vipa.config import DataConfig, resolve_config
from vipa.data.synthetic import Obj, Scene, generate_synthetic
from vipa.training import train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train; see ``single_thread`` in conftest."""


def _trained(root, run, *sets: str):
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data": "synthetic-gres",
               "data_root": root, "image_size": 32, "batch_size": 4, "max_steps": 1,
               "device": "cpu", "output": run}
    cfg = resolve_config("cpu", options, ["veg.k=4", "decoder.dim=16", "train.warmup_steps=0",
                                          "train.val_every=100", "data.max_val_samples=2",
                                          *sets])
    return train(cfg, progress=False).run_dir / "last.safetensors"


def test_every_sample_is_counted_once_per_group(tmp_path):
    root = generate_synthetic(tmp_path / "data", seed=2, n_train=12, n_val=40, n_test=2,
                              image_size=48, style="gres")
    checkpoint = _trained(root, tmp_path / "run", "model.presence=head")
    r = presence.diagnose(checkpoint, DataConfig(name="synthetic-gres", root=str(root)),
                          "val", samples=1000)
    assert r["none"]["samples"] > 0 and r["single"]["samples"] > 0
    assert r["none"]["samples"] == sum(v["samples"] for k, v in r.items()
                                       if k.count("/") == 1)
    assert {k for k in r if k.count("/") == 1} <= {"none/bound", "none/lacking"}
    for value in r.values():
        assert 0 <= value["present"] <= 1 and 0 < value["mean_probability"] < 1
        assert 0 <= value["mask_present"] <= 1
    assert 0 <= r["none"]["auc"] <= 1 and "auc" not in r["single"]
    assert 0 <= r["none"]["mask_peak_auc"] <= 1 and "mask_peak_auc" not in r["single"]
    assert 0 <= r["none"]["joint_auc"] <= 1 and "joint_sweep" in r["none"]
    assert presence.auc([0.9, 0.8], [0.1, 0.85]) == 0.75
    assert presence.auc([0.5], [0.5]) == 0.5 and presence.auc([], [0.2]) is None
    rows = r["none"]["sweep"]["rows"]
    assert [row["threshold"] for row in rows] == pytest.approx([t / 10 for t in range(1, 10)])
    assert all(0 <= row["n_acc"] <= 1 and 0 <= row["t_acc"] <= 1 for row in rows)
    balanced = presence.sweep([0.9, 0.6, 0.3], [0.1, 0.4, 0.7])
    assert balanced["balanced"] == {"threshold": 0.6, "n_acc": 2 / 3, "t_acc": 2 / 3}
    assert presence.sweep([0.9], [0.1])["rows"][4] == {"threshold": 0.5, "n_acc": 1.0,
                                                       "t_acc": 1.0}
    named = presence.by_name(checkpoint, DataConfig(name="synthetic-gres", root=str(root)),
                             "val", images=5)
    assert set(named) == {"circle", "square", "triangle", "star"}
    assert sum(row["images_absent"] for row in named.values()) > 0  # 2-3 shapes a picture
    for row in named.values():
        assert all(v is None or 0 <= v <= 1 for k, v in row.items() if k != "images_absent")
    without = presence.diagnose(_trained(root, tmp_path / "off"),
                                DataConfig(name="synthetic-gres", root=str(root)), "val", 1000)
    assert without["none"]["present"] is None and "auc" not in without["none"]  # no head
    assert "sweep" not in without["none"] and "joint_auc" not in without["none"]
    assert 0 <= without["none"]["mask_peak_auc"] <= 1  # the mask's own signal still reads


def test_a_phrase_is_bound_when_the_scene_has_its_colour_and_its_shape():
    scene = Scene((Obj("circle", "green", "big", "plain", 30, 30, 12),
                   Obj("star", "red", "big", "plain", 90, 90, 12)), 128)
    assert presence.none_kind("the green star", scene) == ("bound", "attribute", None)
    assert presence.none_kind("the leftmost green star", scene) == ("bound", "position", None)
    assert presence.none_kind("the square", scene) == ("lacking", "attribute", "shape")
    assert presence.none_kind("the blue circle", scene) == ("lacking", "attribute", "colour")


def test_the_refitted_readouts_score_every_no_match_group_of_the_heads_input(tmp_path):
    root = generate_synthetic(tmp_path / "data", seed=2, n_train=40, n_val=40, n_test=2,
                              image_size=48, style="gres")
    checkpoint = _trained(root, tmp_path / "run", "model.presence=head")
    data = DataConfig(name="synthetic-gres", root=str(root))
    model, dataset, instances = presence.load_split(checkpoint, data, "val", 30)
    parts, head, groups = presence_probe.head_inputs(model, dataset, instances, batch_size=7)
    assert len(groups) == len(head) == 30 and torch.all((head > 0) & (head < 1))
    assert parts["sentence"].shape[0] == parts["map"].shape[0] == parts["summary"].shape[0] == 30
    assert parts["summary"].shape[1] == 3
    r = presence_probe.run(checkpoint, data, n_train=60, n_val=30)
    assert 0 < r["train_phrases"] <= 60 and r["val_phrases"] == 30
    stages = [f"stride {s} mlp" for s in model.encoder.strides]
    assert set(r) == {"train_phrases", "val_phrases", "head", "linear", "mlp",
                      "map linear", "map mlp", *stages}
    assert "none" in r["head"] and all(k.startswith("none") for k in r["head"])
    assert parts["stride 4"].shape == (30, 2 * model.encoder.out_channels[0])
    for name in ("linear", "mlp", "map linear", "map mlp", *stages):
        assert set(r[name]) == set(r["head"]) | {"train_auc"}
        assert all(v is None or 0 <= v <= 1 for v in r[name].values())
    # an MLP wide enough to memorise 60 phrases separates its own fitting set
    assert r["mlp"]["train_auc"] > 0.9


def test_the_mlp_readout_learns_a_separable_label():
    torch.manual_seed(1)
    x = torch.randn(200, 5)
    y = (x[:, 0] * x[:, 1] > 0).float()  # not linearly separable, an MLP can
    scores = presence_probe.fit_mlp(x[:150], y[:150], x[150:])
    assert presence.auc(scores[y[150:] == 1].tolist(), scores[y[150:] == 0].tolist()) > 0.9
    groups = [["single"], ["none", "none/bound"], ["multi"], ["none", "none/lacking"]]
    aucs = presence_probe.group_aucs(torch.tensor([0.9, 0.1, 0.8, 0.85]), groups)
    assert aucs == {"none": 0.75, "none/bound": 1.0, "none/lacking": 0.5}
