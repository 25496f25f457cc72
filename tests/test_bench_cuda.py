"""``python -m bench.cuda --dry-run``: the GPU check's code runs end to end on the CPU."""

from __future__ import annotations

import json

import pytest

from bench import cuda
from bench.cuda_plan import SECTIONS


def test_dry_run_runs_every_section_and_writes_the_report(tmp_path):
    paths = {name: tmp_path / f"cuda.{name}" for name in ("json", "md", "png")}
    code = cuda.main(["--dry-run", "--json", str(paths["json"]), "--markdown",
                      str(paths["md"]), "--plot", str(paths["png"])])
    report = json.loads(paths["json"].read_text())
    sections = report["sections"]
    errors = {name: s.get("error") for name, s in sections.items() if "error" in s}
    assert code == 0 and not errors, errors
    assert list(sections) == list(SECTIONS)
    assert "tests collected" in sections["tests"]["summary"]  # collected only on the CPU
    assert [step for step, _ in sections["recipe"]["runs"]["off"]["curve"]] == [4]
    paper = sections["paper_train"]
    assert paper["steps"] == 4 and 0 <= paper["data_wait_pct"] <= 100
    modes = {row["mode"] for row in sections["inference"]["rows"]}
    assert modes == {"eager fp32", "eager bf16", "bf16 weights", "eager bf16 timm-attention",
                     "eager bf16 sdpa-attention"}
    assert [r["batch"] for r in sections["inference"]["sdpa_over_timm"]] == [1, 2]
    compiled = sections["compile"]["rows"]
    assert compiled and all(row["mode"] == "compiled bf16" and row["images_per_s"] > 0
                            for row in compiled)
    assert sections["inference"]["profile"]["top"]
    assert sections["onnx"]["cpu_max_abs_diff"] <= 1e-4
    assert sections["ddp"]["backend"] == "gloo" and sections["ddp"]["ranks_agree"]
    assert all(row["images_per_s"] > 0 for row in sections["data"]["rows"])
    text = paths["md"].read_text()
    assert all(f"**{name}**" in text for name in SECTIONS)
    assert paths["png"].stat().st_size > 0


def test_unknown_sections_and_a_missing_gpu_stop_in_one_line(capsys):
    with pytest.raises(SystemExit, match="unknown section"):
        cuda.main(["--dry-run", "--only", "machine,nope"])
    if not cuda.torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            cuda.main(["--only", "machine"])
