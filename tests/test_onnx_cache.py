"""The optimized graph a CPU run keeps of an ONNX export: made once, same outputs, never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_export import small_model

from vipa.checkpoint import save_checkpoint
from vipa.inference.export import export_checkpoint
from vipa.inference.onnx_cache import OPTIMIZED_FILE, graph_key
from vipa.inference.runtime import load_exported


@pytest.fixture
def exported(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPA_CACHE", str(tmp_path / "cache"))
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", small_model("tiny", "late"))
    output = tmp_path / "model.onnx"
    export_checkpoint(checkpoint, output, "onnx", verify=False)
    return output


def _outputs(runtime) -> tuple[np.ndarray, np.ndarray]:
    images = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=images).numpy()
    ids, mask = runtime.tokenize(["the red one", "a blue square", "the left circle"])
    return runtime.run(images, ids, mask, np.array([0, 1, 1]))


def test_the_optimized_graph_is_cached_once_and_gives_the_same_outputs(exported, tmp_path,
                                                                       monkeypatch):
    cached = tmp_path / "cache" / "onnx" / graph_key(exported) / OPTIMIZED_FILE
    first = load_exported(exported, "cpu")  # optimizes and saves the graph
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    second = load_exported(exported, "cpu")  # opens the saved graph
    assert cached.stat().st_mtime_ns == stamp
    monkeypatch.setenv("VIPA_TRACE_CACHE", "off")
    plain = load_exported(exported, "cpu")
    want = _outputs(plain)
    for runtime in (first, second):
        for got, ref in zip(_outputs(runtime), want, strict=True):
            np.testing.assert_allclose(got, ref, atol=1e-5)


def test_cache_off_writes_nothing_and_a_new_export_gets_a_new_key(exported, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("VIPA_TRACE_CACHE", "off")
    load_exported(exported, "cpu")
    assert not (tmp_path / "cache" / "onnx").exists()
    key = graph_key(exported)
    other = tmp_path / "other.onnx"
    model = small_model("tiny", "late")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # retrained: other weights
    checkpoint = save_checkpoint(tmp_path / "other.safetensors", model)
    export_checkpoint(checkpoint, other, "onnx", verify=False)
    assert graph_key(other) != key


def test_an_unwritable_cache_only_costs_speed(exported, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("VIPA_CACHE", str(blocker))
    runtime = load_exported(exported, "cpu")
    assert _outputs(runtime)[0].shape[0] == 3
