"""bench.photo runs end to end: a 12 MP and a 0.24 MP photo through `vipa predict` processes."""

from __future__ import annotations

import json

from PIL import Image

from bench import photo


def test_photo_report_on_a_tiny_model(served_checkpoint, tmp_path):
    out = tmp_path / "photo"
    photo.main(["--checkpoint", str(served_checkpoint), "--runs", "1", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    assert rows["phone"]["pixels"] == 12_000_000 and rows["small"]["pixels"] == 240_000
    for row in rows.values():
        assert row["median_s"] > 0 and row["peak_rss_mb"] > 50  # a real process was measured
    assert result["time_ratio"] > 0 and result["memory_ratio"] > 0
    assert "12 MP / 0.24 MP" in out.with_suffix(".md").read_text()


def test_the_photos_are_the_sizes_compared(tmp_path):
    paths = photo.write_photos(tmp_path)
    assert {name: Image.open(path).size for name, path in paths.items()} == photo.SIZES
