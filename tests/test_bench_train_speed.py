"""bench.train_speed runs end to end on a tiny recipe: a row per variant, ratios consistent."""

from __future__ import annotations

import json

from bench import train_speed
from vipa.data.synthetic import generate_synthetic


def test_train_speed_report(tmp_path):
    root = generate_synthetic(tmp_path / "data", seed=0, n_train=16, n_val=4, n_test=2,
                              image_size=64)
    out = tmp_path / "speed.json"
    argv = ["--runs", "2", "--warmup", "1", "--threads", "1", "--json", str(out),
            "--variant", "48 px=model.image_size=48", "--step-mode", "channels_last"]
    for override in (f"data.root={root}", "model.encoder.name=tiny",
                     "model.encoder.preset=micro", "model.image_size=64", "model.decoder.dim=16",
                     "model.veg.k=4", "train.batch_size=4"):
        argv += ["--set", override]
    assert train_speed.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["image_size"], r["step_mode"]) for r in rows] == [
        ("recipe", 64, None), ("48 px", 48, None), ("recipe, channels_last", 64, "channels_last")]
    assert rows[0]["vs_recipe"] == 1.0
    assert all(r["first_call_s"] is None for r in rows)  # only a compiled step has one
    for row in rows:
        assert row["samples_per_s"] > 0 and row["loader_s_per_batch"] > 0
        assert abs(row["samples_per_s"] * row["step_ms"] / 4000 - 1) < 0.01
