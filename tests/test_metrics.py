"""RIS metrics against a naive per-pixel reference, and merging of accumulators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vipa.errors import UsageError
from vipa.metrics import RISMetrics, intersection_union

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


@st.composite
def mask_pairs(draw: st.DrawFn) -> list[tuple[np.ndarray, np.ndarray]]:
    """Lists of (pred, gt) bool masks of varying sizes; empty and full masks included."""
    n = draw(st.integers(1, 6))
    pairs = []
    for _ in range(n):
        shape = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        style = draw(st.sampled_from(["random", "empty_pred", "empty_both", "equal"]))
        gt = draw(arrays(np.bool_, shape))
        pred = draw(arrays(np.bool_, shape))
        if style == "empty_pred":
            pred = np.zeros(shape, bool)
        elif style == "empty_both":
            pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
        elif style == "equal":
            pred = gt.copy()
        pairs.append((pred, gt))
    return pairs


def naive(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The protocol written out pixel by pixel."""
    ious, total_i, total_u = [], 0, 0
    for pred, gt in pairs:
        i = u = 0
        for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist(), strict=True):
            i += p and g
            u += p or g
        ious.append(i / u if u else 0.0)
        total_i += i
        total_u += u
    out = {"mIoU": sum(ious) / len(ious), "oIoU": total_i / total_u if total_u else 0.0}
    for t in THRESHOLDS:
        out[f"P@{t}"] = sum(iou >= t for iou in ious) / len(ious)
    out["samples"] = len(pairs)
    return out


@settings(max_examples=100, deadline=None)
@given(mask_pairs())
def test_matches_the_naive_reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    metrics = RISMetrics()
    for pred, gt in pairs:
        metrics.update(pred, gt)
    got, want = metrics.compute(), naive(pairs)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=100, deadline=None)
@given(mask_pairs(), st.data())
def test_merged_accumulators_equal_one_over_all(pairs: list, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(pairs)))
    whole, first, second = RISMetrics(), RISMetrics(), RISMetrics()
    whole.update([p for p, _ in pairs], [g for _, g in pairs])
    for pred, gt in pairs[:cut]:
        first.update(torch.from_numpy(pred), torch.from_numpy(gt))
    for pred, gt in pairs[cut:]:
        second.update(pred, gt)
    first.merge(second.state())
    assert torch.allclose(first.state(), whole.state())
    assert first.compute() == pytest.approx(whole.compute())


def test_batches_and_float_masks() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 1, 9, 11, generator=gen)
    gts = torch.rand(4, 9, 11, generator=gen) > 0.5
    batch = RISMetrics()
    ious = batch.update(probs, gts)
    single = RISMetrics()
    for k in range(4):
        single.update((probs[k, 0] > 0.5).numpy(), gts[k].numpy())
    assert torch.equal(batch.state(), single.state()) and len(ious) == 4


def test_edge_cases_and_state_layout() -> None:
    assert intersection_union(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == (0, 0)
    metrics = RISMetrics()
    assert metrics.compute()["samples"] == 0 and metrics.compute()["mIoU"] == 0.0
    pred = np.array([[1, 1, 0, 0]], bool)
    gt = np.array([[1, 0, 0, 0]], bool)
    metrics.update(pred, gt)  # IoU exactly 0.5: counts for P@0.5 (>=)
    metrics.update(np.zeros((2, 2), bool), np.zeros((2, 2), bool))  # U = 0 -> IoU 0
    result = metrics.compute()
    assert result["P@0.5"] == 0.5 and result["P@0.6"] == 0.0
    assert result["mIoU"] == 0.25 and result["oIoU"] == 0.5 and result["samples"] == 2
    assert metrics.state().tolist() == [0.5, 2.0, 1.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(UsageError):
        metrics.update(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(UsageError):
        metrics.merge(torch.zeros(3))


def test_all_reduce_single_process(tmp_path) -> None:  # noqa: ANN001
    import torch.distributed as dist

    metrics = RISMetrics()
    metrics.update(np.ones((2, 2), bool), np.eye(2, dtype=bool))
    before = metrics.state()
    assert torch.equal(metrics.all_reduce().state(), before)  # not initialised: no-op
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        assert torch.equal(metrics.all_reduce().state(), before)
    finally:
        dist.destroy_process_group()
