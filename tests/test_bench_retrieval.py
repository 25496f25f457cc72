"""bench.retrieval: retrieval hit rate, expression precision and text dependence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import retrieval
from vipa.config import DataConfig, resolve_config
from vipa.data.refer import load_refs
from vipa.data.synthetic import generate_synthetic
from vipa.data.transforms import resize_mask
from vipa.model.losses import target_grid
from vipa.training import train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train; see ``single_thread`` in conftest."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    root = generate_synthetic(tmp_path_factory.mktemp("synth"), seed=4, n_train=8, n_val=6,
                              n_test=2, image_size=48)
    options = {"encoder": "tiny", "preset": "micro", "fusion": "early", "data_root": root,
               "image_size": 64, "batch_size": 4, "max_steps": 1, "device": "cpu",
               "output": tmp_path_factory.mktemp("run")}
    # veg.level 16 at 64 px: a 4x4 token grid, all 16 of them retrieved (k = 16).
    cfg = resolve_config("cpu", options, ["veg.k=16", "veg.level=16", "decoder.dim=16",
                                          "train.warmup_steps=0", "train.val_every=100",
                                          "data.max_val_samples=2"])
    return train(cfg, progress=False).run_dir / "last.safetensors", root


def test_precision_of_retrieving_every_token_is_the_target_share(checkpoint):
    path, root = checkpoint
    r = retrieval.diagnose(path, DataConfig(root=str(root)), "val", samples=6, batch_size=4)
    assert r["samples"] == 6 and r["k"] == 16 and r["grid_tokens"] == 16
    # With K = every token, the expression holds all target cells and nothing else decides.
    assert r["precision"] == pytest.approx(r["cells"] / 16)
    assert 0 < r["cells"] < 16
    # The preset's decoder attends to the tokens above the mean relevance (and the best).
    assert 1 <= r["kept"] < 16 and 0.0 <= r["kept_precision"] <= 1.0
    for key in ("top1", "iou", "swap_iou", "hidden_iou"):  # the preset decodes with kv=both
        assert 0.0 <= r[key] <= 1.0
    assert 0 < r["position_samples"] < 6  # the set's kinds are balanced
    assert set(r["top1_kinds"]) == {"attribute", "position", "relation"}
    assert 0.0 <= r["position_hit_missed"] <= 1.0
    for shares in r["top1_misses"].values():
        assert set(shares) == set(retrieval.MISS_PLACES)
        assert sum(shares.values()) == pytest.approx(1.0)
    # Every placed miss is counted once in the per-place recovery, with a share.
    placed = r["p50_missed_places"]
    assert set(placed) <= set(retrieval.MISS_PLACES)
    missed = round((1 - r["top1"]) * r["samples"])
    assert sum(v["samples"] for v in placed.values()) == missed
    assert all(0.0 <= v["p50"] <= 1.0 for v in placed.values())


def test_a_missed_top1_is_placed_on_a_lookalike_or_the_background(checkpoint):
    _, root = checkpoint
    index = load_refs(root, "synthetic")
    size, grid = 64, (8, 8)

    def cells(ann_id: int) -> torch.Tensor:
        mask = resize_mask(torch.from_numpy(index.mask(ann_id))[None].float(), size)
        return target_grid(mask[None], grid)[0].flatten()

    ref, twin = next((r, a) for r in index.refs for a in index.annotations.values()
                     if a["image_id"] == r["image_id"] and a["id"] != r["ann_id"]
                     and a["category_id"] == r["category_id"])
    covered = torch.stack([cells(a["id"]) for a in index.annotations.values()
                           if a["image_id"] == ref["image_id"]]).any(0)
    on_twin = int(cells(twin["id"]).nonzero()[0])
    empty = int((~covered).nonzero()[0])
    places = retrieval._miss_finder(index)
    batch = {"ref_id": torch.tensor([ref["ref_id"]] * 3), "image": torch.zeros(3, 3, size, size)}
    found = places(batch, torch.tensor([on_twin, empty, empty]),
                   torch.tensor([False, False, True]), grid)
    assert found == ["lookalike", "background", ""]


def test_cli_prints_one_table_row_per_checkpoint(checkpoint, capsys):
    path, root = checkpoint
    assert retrieval.main([str(path), str(path), "--data-root", str(root), "--samples", "3"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {path}")]
    assert len(rows) == 2
