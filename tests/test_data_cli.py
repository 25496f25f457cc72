"""`vipa data synth|stats|show` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import vipa.data.synthetic as synthetic
from vipa_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synth"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--seed", "1",
                                 "--n-train", "12", "--n-val", "6", "--n-test", "3",
                                 "--image-size", "48"])
    assert result.exit_code == 0, result.output
    assert "24 expressions" in result.stdout
    return out


def test_synth_writes_the_refcoco_layout(root: Path) -> None:
    assert (root / "synthetic" / "refs(vipa).p").is_file()
    assert (root / "synthetic" / "instances.json").is_file()
    assert any((root / "synthetic" / "images").glob("*.jpg"))


def test_stats_json_and_table(root: Path) -> None:
    result = runner.invoke(app, ["data", "stats", "--data", "synthetic", "--data-root", str(root),
                                 "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["split_by"] == "vipa"
    assert {s: v["sentences"] for s, v in payload["splits"].items()} == \
        {"train": 12, "val": 6, "testA": 3, "testB": 3, "reworded": 6}
    assert all(v["images"] <= v["refs"] <= v["sentences"] for v in payload["splits"].values())
    table = runner.invoke(app, ["data", "stats", "--data-root", str(root)])
    assert table.exit_code == 0 and "testB" in table.stdout and "sentences" in table.stdout


def test_show_writes_a_png(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample.png"
    result = runner.invoke(app, ["data", "show", "--data", "synthetic", "--data-root", str(root),
                                 "--split", "val", "--index", "2", "--scale", "3",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        assert picture.width == 48 * 3 and picture.height > 48 * 3  # caption below
    bad = runner.invoke(app, ["data", "show", "--data-root", str(root), "--sent-id", "99999",
                              "--out", str(out)])
    assert bad.exit_code == 2 and "sent_id 99999" in bad.output


def test_missing_data_root_is_one_line_and_exit_1(tmp_path: Path) -> None:
    for args in (["data", "stats", "--data", "refcoco", "--data-root", str(tmp_path / "none")],
                 ["data", "show", "--data", "refcoco"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:")


def test_synthetic_without_root_uses_the_cache(root: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "ensure_synthetic", lambda **_: root)
    result = runner.invoke(app, ["data", "stats", "--data", "synthetic", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["train"]["sentences"] == 12
