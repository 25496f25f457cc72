"""bench.phrases runs end to end on a tiny model: every fusion x phrase count, ratios consistent."""

from __future__ import annotations

import json

from bench import phrases

TINY = ["encoder.name=tiny", "encoder.preset=micro", "image_size=64", "decoder.dim=16",
        "decoder.heads=2", "veg.heads=2", "veg.k=4"]


def test_phrases_report_on_a_tiny_model(tmp_path):
    out = tmp_path / "phrases.json"
    argv = ["--phrases", "1,4", "--runs", "2", "--warmup", "1", "--threads", "1",
            "--json", str(out), "--markdown", str(tmp_path / "phrases.md")]
    for override in TINY:
        argv += ["--set", override]
    assert phrases.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["fusion"], r["phrases"]) for r in rows] == [
        (f, n) for f in ("early", "late", "none") for n in (1, 4)]
    for row in rows:
        assert row["shared_ms_per_phrase"] > 0 and row["repeated_ms_per_phrase"] > 0
        ratio = row["repeated_ms_per_phrase"] / row["shared_ms_per_phrase"]
        assert abs(row["speedup"] - ratio) < 1e-9
    assert "| late | 4 |" in (tmp_path / "phrases.md").read_text()
