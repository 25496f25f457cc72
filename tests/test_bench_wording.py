"""bench.wording: the reworded phrases said again with one part of the wording changed."""

from __future__ import annotations

import pytest

from bench import wording
from vipa.config import resolve_config
from vipa.data.synthetic import DEFAULT, generate_synthetic
from vipa.training import train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train; see ``single_thread`` in conftest."""


def test_each_wording_changes_only_its_part():
    said = wording.sentences(["the violet tiny circle here"], 0)
    assert said["reworded"] == [("attribute", "the violet tiny circle here")]
    assert said["+ training size words"][0][1] in ("the violet small circle here",
                                                    "the violet little circle here")
    assert said["+ training colour words"][0][1] == "the purple tiny circle here"
    assert said["+ training word order"][0][1] == "the tiny violet circle here"
    assert said["+ training templates"][0][1] == "the violet tiny circle"
    assert DEFAULT.read(said["training wording"][0][1]) == DEFAULT.read(
        "the violet tiny circle here", reworded=True)
    assert wording.sentences(["not a phrase of the set"], 0)["reworded"] == [None]
    assert wording.template_of("the violet tiny circle here") == "the {phrase} here"


def test_every_wording_scores_the_same_samples(tmp_path):
    root = generate_synthetic(tmp_path / "data", seed=2, n_train=8, n_val=12, n_test=2,
                              image_size=48)
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data": "synthetic",
               "data_root": root, "image_size": 32, "batch_size": 4, "max_steps": 1,
               "device": "cpu", "output": tmp_path / "run"}
    cfg = resolve_config("cpu", options, ["veg.k=4", "decoder.dim=16", "train.warmup_steps=0",
                                          "train.val_every=100", "data.max_val_samples=2"])
    checkpoint = train(cfg, progress=False).run_dir / "last.safetensors"
    result = wording.run(checkpoint, 20, str(root))
    counts = {name: row["all"]["samples"] for name, row in result.items() if name != "templates"}
    assert set(counts) == set(wording.WORDINGS) and len(set(counts.values())) == 1
    assert sum(t["samples"] for t in result["templates"].values()) == counts["reworded"] > 0
    assert "" not in result["templates"]  # every reworded sentence reads as a template
    assert "| + training templates |" in wording.table(result)
