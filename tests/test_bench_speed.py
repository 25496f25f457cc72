"""bench.speed runs end to end on a tiny model and writes a complete, consistent report.

Only structure and sanity are checked (positive times, ratios made from the
reported values), never how fast anything is.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from bench import speed, speed_timing
from bench.models import preset_model_config
from vipa.config import resolve_config

TINY = ["encoder.name=tiny", "encoder.preset=micro", "image_size=64", "decoder.dim=16",
        "decoder.heads=2", "veg.heads=2", "veg.k=4"]


def test_report_on_a_tiny_model(tmp_path, capsys):
    threads = torch.get_num_threads()
    out_json, out_md = tmp_path / "speed.json", tmp_path / "speed.md"
    argv = ["--presets", "cpu", "--device", "cpu", "--runs", "2", "--warmup", "1",
            "--batch-sizes", "1,2", "--skip-cold-start", "--threads", "1",
            "--json", str(out_json), "--markdown", str(out_md)]
    for override in TINY:
        argv += ["--set", override]
    assert speed.main(argv) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak out of main

    report = json.loads(out_json.read_text())
    assert report["machine"]["torch"] == torch.__version__
    assert report["machine"]["torch_threads"] == 1
    assert {"date", "cpu", "cpu_count", "devices"} <= set(report["machine"])
    assert report["cold_start"] == []
    (row,) = report["results"]
    assert (row["preset"], row["device"], row["precision"]) == ("cpu", "cpu", "fp32")
    assert row["image_size"] == 64
    assert row["plan"]["runs"] == 2 and row["plan"]["batch_sizes"] == [1, 2]
    assert row["memory_method"]

    models = row["models"]
    assert set(models) == {"visual", "language"}
    for kv, entry in models.items():
        assert entry["kv"] == kv and entry["encoder"] == "tiny"
        assert entry["params"]["total"] == sum(entry["params"][p] for p in
                                               ("encoder", "fusion", "veg", "decoder"))
        assert all(entry["gflops"][p] >= 0 for p in entry["gflops"])
        assert entry["gflops"]["total"] > 0
        assert all(entry["component_ms"][p] >= 0 for p in entry["component_ms"])
        assert sum(entry["component_pct"].values()) > 0
        eager = entry["modes"]["eager"]
        assert [b["batch"] for b in eager["batches"]] == [1, 2]
        for batch in eager["batches"]:
            assert batch["median_ms"] > 0
            assert batch["samples_per_s"] == pytest.approx(
                batch["batch"] * 1000 / batch["median_ms"], rel=1e-3)
            assert batch["peak_mb"] >= entry["weights_mb"] > 0
        assert eager["latency_ms"] == eager["batches"][0]["median_ms"]
        assert eager["throughput"]["samples_per_s"] == max(
            b["samples_per_s"] for b in eager["batches"])
    # The encoder is shared; only VEG's expression part and the decoder's keys differ.
    assert models["visual"]["params"]["encoder"] == models["language"]["params"]["encoder"]
    assert models["visual"]["params"]["veg"] > models["language"]["params"]["veg"]

    ratio = row["ratios"]["eager"]
    visual, language = models["visual"], models["language"]
    assert ratio["latency"] == pytest.approx(
        visual["modes"]["eager"]["latency_ms"] / language["modes"]["eager"]["latency_ms"],
        rel=1e-3)
    assert ratio["throughput"] == pytest.approx(
        visual["modes"]["eager"]["throughput"]["samples_per_s"]
        / language["modes"]["eager"]["throughput"]["samples_per_s"], rel=1e-3)
    assert ratio["params"] == pytest.approx(
        visual["params"]["total"] / language["params"]["total"], rel=1e-3)
    assert ratio["gflops"] == pytest.approx(
        visual["gflops"]["total"] / language["gflops"]["total"], rel=1e-3)

    printed = capsys.readouterr().out
    assert out_md.read_text() == printed
    assert "VIPA / classic" in printed and "| cpu | cpu fp32 | eager |" in printed


def _args(**given) -> argparse.Namespace:
    values = {"runs": None, "warmup": None, "batch_sizes": None, "component_runs": None}
    return argparse.Namespace(**{**values, **given})


def test_plan_is_reduced_for_a_slow_cpu_model_unless_given():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert speed_timing.resolve_plan(_args(), cpu, 0.05) == speed_timing.Plan()
    slow = speed_timing.resolve_plan(_args(), cpu, 12.0)
    assert slow.runs < speed_timing.Plan().runs and slow.batch_sizes == (1,)
    assert "12.0 s" in slow.reason
    assert speed_timing.resolve_plan(_args(), cuda, 12.0).runs == speed_timing.Plan().runs
    given = speed_timing.resolve_plan(_args(runs=5, batch_sizes=(2, 4)), cpu, 12.0)
    assert (given.runs, given.batch_sizes) == (5, (1, 2, 4))
    assert "--runs 5" in given.reason


def test_presets_time_the_encoder_size_that_training_uses():
    """The `cpu` recipe names a size class; the benchmarks must time the model it trains."""
    for preset in ("cpu", "paper"):
        trained = resolve_config(preset, {"data": "synthetic"}).model.encoder
        timed = preset_model_config(preset, []).encoder
        assert (timed.name, timed.preset) == (trained.name, trained.preset)
        assert timed.weights == "random"
