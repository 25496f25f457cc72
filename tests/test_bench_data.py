"""``python -m bench.data``: the RefCOCO-shaped set loads through vipa and every figure is made."""

from __future__ import annotations

import json

from bench import data
from vipa.data.dataset import RISDataset


def test_refcoco_like_set_loads_as_refcoco(tmp_path):
    root = data.write_refcoco_like(tmp_path / "set", images=3)
    dataset = RISDataset(root, "refcoco", split="train", image_size=64)
    assert len(dataset) == 3 * 3 * 2  # three refs of two sentences per image
    sample = dataset[0]
    assert sample["image"].shape == (3, 64, 64) and 0 < sample["mask"].mean() < 1
    assert tuple(sample["orig_size"].tolist()) in {(h, w) for w, h in data.SIZES}


def test_bench_data_reports_stages_decoders_and_loaders(tmp_path):
    out = tmp_path / "data.json"
    assert data.main(["--images", "4", "--samples", "2", "--batches", "1", "--workers", "0,1",
                      "--image-size", "64", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["stages_ms"]["whole __getitem__"] > 0
    assert report["decoders"]["torchvision decode_jpeg"]["max_abs_diff_vs_PIL"] <= 2
    assert [row["workers"] for row in report["loaders"]] == [0, 1]
    assert all(row["images_per_s"] > 0 for row in report["loaders"])
