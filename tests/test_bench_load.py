"""bench.load runs end to end on a tiny model: real servers on loopback, bounded requests."""

from __future__ import annotations

import json

from bench import load

TINY = ["encoder.name=tiny", "encoder.preset=micro", "image_size=64", "decoder.dim=16",
        "veg.k=4"]


def test_load_report_on_a_tiny_model(tmp_path):
    out = tmp_path / "load.json"
    argv = ["--levels", "1,4", "--requests", "6", "--sequential", "1", "--threads", "1",
            "--json", str(out), "--plot", str(tmp_path / "load.png")]
    for override in TINY:
        argv += ["--set", override]
    assert load.main(argv) == 0
    report = json.loads(out.read_text())
    for name in ("batch 8", "batch 1"):
        rows = report["serve"][name]
        assert [r["concurrency"] for r in rows] == [1, 4]
        for row in rows:
            assert row["statuses"] == {"200": 6} and row["failed"] == 0
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert report["processes"]["batch_requests"] == 6
    assert len(report["ratios"]) == 3 and all(v > 0 for v in report["ratios"].values())
    assert (tmp_path / "load.png").stat().st_size > 0
