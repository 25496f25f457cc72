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
    assert modes == {"eager fp32", "eager bf16", "bf16 weights", "bf16 weights channels_last",
                     "eager bf16 timm-attention", "eager bf16 sdpa-attention"}
    assert [r["batch"] for r in sections["inference"]["sdpa_over_timm"]] == [1, 2]
    compiled = sections["compile"]["rows"]
    assert compiled and all(row["mode"] == "compiled bf16" and row["images_per_s"] > 0
                            for row in compiled)
    assert sections["inference"]["profile"]["top"] and sections["compile"]["profile"]["top"]
    assert sections["onnx"]["cpu_max_abs_diff"] <= 1e-4
    assert sections["ddp"]["backend"] == "gloo" and sections["ddp"]["ranks_agree"]
    assert all(row["images_per_s"] > 0 for row in sections["data"]["rows"])
    fast = sections["fast_train"]["rows"]
    assert [(r["arm"], r["batch"]) for r in fast] == [("eager", 2), ("static", 2),
                                                      ("compiled", 2)]
    assert all(r["images_per_s"] > 0 and r["lavt_epoch_min"] > 0 for r in fast), fast
    text = paths["md"].read_text()
    assert all(f"**{name}**" in text for name in SECTIONS)
    assert "profile, VIPA compiled bf16" in text
    assert paths["png"].stat().st_size > 0


def test_unknown_sections_and_a_missing_gpu_stop_in_one_line(capsys):
    with pytest.raises(SystemExit, match="unknown section"):
        cuda.main(["--dry-run", "--only", "machine,nope"])
    if not cuda.torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            cuda.main(["--only", "machine"])


@pytest.mark.parametrize(("card", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.5), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA A10", 125.0), ("NVIDIA L4", 121.0), ("NVIDIA A40", None),
])
def test_the_bf16_peak_is_looked_up_by_the_exact_card(card, peak):
    """An H100 PCIe or NVL is not an SXM card; an A10 is not an A100, an L4 not an L40S."""
    from bench.cuda_plan import bf16_peak_tflops

    assert bf16_peak_tflops(card) == peak
