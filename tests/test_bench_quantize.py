"""bench.quantize runs end to end on a tiny checkpoint; only structure and sanity are checked."""

from __future__ import annotations

import json

from bench import quantize


def test_report_on_a_tiny_checkpoint(served_checkpoint, tmp_path, capsys):
    out_json, out_md = tmp_path / "q.json", tmp_path / "q.md"
    assert quantize.main(["--checkpoint", str(served_checkpoint), "--runs", "2", "--warmup", "1",
                          "--json", str(out_json), "--markdown", str(out_md)]) == 0
    report = json.loads(out_json.read_text())
    assert [r["model"] for r in report["rows"]] == ["fp32", "int8"]
    for row in report["rows"]:
        assert row["megabytes"] > 0 and row["ms_per_image"] > 0
        assert 0.0 <= row["mask_iou_vs_fp32_pytorch"] <= 1.0
    assert report["rows"][0]["mask_iou_vs_fp32_pytorch"] > 0.99  # fp32 is the same model
    assert "int8 / fp32: size" in out_md.read_text() and "| int8 |" in capsys.readouterr().out
