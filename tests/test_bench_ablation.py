"""bench.ablation: rows per run, skip on restart, statistics, docs section, chart."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench import ablation, ablation_plan, ablation_report, ablation_summary
from vipa.data.synthetic import generate_synthetic
from vipa.training import train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """These tests train; see ``single_thread`` in conftest."""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=3, n_train=12, n_val=4,
                              n_test=2, image_size=48)


def tiny_sets(root: Path) -> list[str]:
    """A seconds-long recipe: tiny encoder, 32 px, 2 steps of batch 4, 4 val samples."""
    sets = ["model.encoder.name=tiny", "model.encoder.preset=micro",
            "model.encoder.weights=random", "model.image_size=32", "veg.k=4", "decoder.dim=16",
            f"data.root={root}", "data.max_val_samples=4", "train.max_steps=2",
            "train.batch_size=4", "train.warmup_steps=0", "train.checkpoint_every=100",
            "train.log_every=1", "train.device=cpu"]
    return [arg for s in sets for arg in ("--set", s)]


class Counting:
    """The real train function, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, cfg, **kwargs):  # noqa: ANN001, ANN204
        self.calls.append(cfg.train.output)
        return train(cfg, **kwargs)


def test_study_records_skips_summarizes_and_documents(data_root, tmp_path):
    out, docs, image = tmp_path / "study", tmp_path / "results.md", tmp_path / "ablation.png"
    docs.write_text("# Results\n\n## Speed and cost\n\nkeep me\n")
    argv = ["--variants", "full,kv-language,cues-local-global", "--seeds", "0,1",
            "--out", str(out), "--docs", str(docs), "--image", str(image), *tiny_sets(data_root)]

    first = Counting()
    assert ablation.main(argv, train_fn=first) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # cues-local-global is the preset's own setting: it reuses full's runs, not trained again.
    assert len(first.calls) == 4
    assert sorted((r["variant"], r["seed"]) for r in rows) == [
        ("full", 0), ("full", 1), ("kv-language", 0), ("kv-language", 1)]
    for row in rows:
        assert row["step"] == 2 and row["score"] == "last validation"
        assert set(row["metrics"]) == set(ablation_plan.METRICS)
        assert 0.0 <= row["metrics"]["mIoU"] <= 1.0
        run_dir = Path(row["run_dir"])
        assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "config.yaml").is_file()
        assert not list(run_dir.glob("*.safetensors"))  # weights dropped once recorded
        retrieval = row["retrieval"]  # scored on the weights before they were dropped
        assert 0 <= retrieval["top1"] <= 1 and 0 <= retrieval["precision"] <= 1
        assert retrieval["k"] == 4 and retrieval["grid_tokens"] == 4  # 2x2 at 32 px
    kv_config = (out / "runs" / "kv-language-seed1" / "config.yaml").read_text()
    assert "kv: language" in kv_config and "seed: 1" in kv_config

    summary = json.loads((out / "summary.json").read_text())
    for variant in ("full", "kv-language"):
        for key in ("mIoU", "oIoU"):
            values = [100 * r["metrics"][key] for r in rows if r["variant"] == variant]
            stat = summary["variants"][variant][key]
            assert stat["mean"] == pytest.approx(statistics.mean(values))
            assert stat["std"] == pytest.approx(statistics.stdev(values))
    full, kv = summary["variants"]["full"], summary["variants"]["kv-language"]
    assert kv["delta_mIoU"] == pytest.approx(kv["mIoU"]["mean"] - full["mIoU"]["mean"])
    assert summary["variants"]["cues-local-global"]["same_as"] == "full"
    assert summary["variants"]["cues-local-global"]["mIoU"] == full["mIoU"]
    (target,) = summary["rq2_targets"]  # kv-visual was not run: the preset's decoder only
    assert target["variant"] == "full"
    assert target["gap_mIoU"] == pytest.approx(-kv["delta_mIoU"])

    text = docs.read_text()
    assert text.startswith("# Results\n\n## Speed and cost\n\nkeep me\n")
    assert text.count(ablation_report.BEGIN) == 1 and text.count(ablation_report.END) == 1
    section = text.split(ablation_report.BEGIN)[1].split(ablation_report.END)[0]
    assert "| kv-language |" in section and "RQ2 target" in section
    assert "| early | " in section  # the fusion x kv grid, kv-language as its early cell
    assert "| full | " in section.split("Retrieval (")[1]
    assert "visual key/value (VIPA) beats language key/value" in section
    assert f"{full['mIoU']['mean']:.1f} ± {full['mIoU']['std']:.1f}" in section
    assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second start trains nothing, appends nothing, and rewrites the section in place.
    second = Counting()
    before = (out / "results.jsonl").read_text()
    assert ablation.main(argv, train_fn=second) == 0
    assert second.calls == []
    assert (out / "results.jsonl").read_text() == before
    assert docs.read_text().count(ablation_report.BEGIN) == 1

    # --summarize-only never trains, even for a seed that is missing.
    third = Counting()
    assert ablation.main([*argv[:3], "0,1,2", *argv[4:], "--summarize-only"],
                         train_fn=third) == 0
    assert third.calls == []


def test_a_changed_recipe_is_never_mixed_into_old_rows(data_root, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    cfg = ablation_plan.variant_config("full", 0, out / "runs" / "full-seed0",
                                       sets=tiny_sets(data_root)[1::2])
    row = {"variant": "full", "seed": 0, "recipe": "another-recipe", "metrics": {}}
    (out / "results.jsonl").write_text(json.dumps(row) + "\n{\"torn")
    assert len(ablation_plan.read_results(out / "results.jsonl")) == 1  # the torn line is skipped
    assert ablation_plan.recipe_hash(cfg) != "another-recipe"
    with pytest.raises(SystemExit, match="another recipe"):
        ablation.run_study(["full"], [0], out, sets=tiny_sets(data_root)[1::2],
                           train_fn=Counting(), echo=lambda _: None)


def test_verdict_rule():
    def rows(variant: str, values: list[float]) -> list[dict]:
        return [{"variant": variant, "seed": i, "metrics": {"mIoU": v, "oIoU": v}, "budget": {}}
                for i, v in enumerate(values)]

    data = (rows("full", [0.50, 0.52, 0.54]) + rows("kv-language", [0.40, 0.41, 0.42])
            + rows("no-refinement", [0.51, 0.53, 0.55]) + rows("cues-local", [0.60, 0.61, 0.62])
            + rows("kv-visual", [0.41, 0.42, 0.43]))
    summary = ablation_summary.summarize(data, ["full", "kv-language", "no-refinement",
                                                "cues-local", "kv-visual"], [0, 1, 2])
    verdicts = {v["variant"]: v["verdict"] for v in summary["verdicts"]}
    assert verdicts == {"kv-language": "reproduced", "no-refinement": "inconclusive (within noise)",
                        "cues-local": "not reproduced", "kv-visual": "reproduced"}
    targets = {t["variant"]: t for t in summary["rq2_targets"]}
    assert targets["full"]["met"] is True
    assert targets["full"]["gap_mIoU"] == pytest.approx(11.0)
    assert targets["kv-visual"]["met"] is False  # the paper's VIPA: 1 point, not 3
    assert targets["kv-visual"]["gap_mIoU"] == pytest.approx(1.0)


def test_grid_table_has_the_three_decoders_of_each_fusion():
    def rows(variant: str, value: float) -> list[dict]:
        budget = {"fusion": "early"}
        return [{"variant": variant, "seed": i, "metrics": {"mIoU": value + i / 100,
                                                            "oIoU": value}, "budget": budget}
                for i in range(2)]

    data = (rows("full", 0.6) + rows("kv-visual", 0.5) + rows("kv-language", 0.7)
            + rows("fusion-late-kv-visual", 0.55) + rows("fusion-late-kv-language", 0.65))
    summary = ablation_summary.summarize(data, ["full", "kv-visual", "kv-language",
                                                "fusion-late-kv-visual",
                                                "fusion-late-kv-language"], [0, 1])
    lines = ablation_report.grid_table(summary).splitlines()
    early = next(line for line in lines if line.startswith("| early |"))
    assert early.split(" | ")[1:4] == ["50.5 ± 0.7", "60.5 ± 0.7", "70.5 ± 0.7"]
    assert early.endswith("| -20.0 | -10.0 |")
    late = next(line for line in lines if line.startswith("| late |"))
    assert late.split(" | ")[2] == "-" and late.endswith("| -10.0 | - |")
    assert "| none | - | - | - | - | - |" in lines
