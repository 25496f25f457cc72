"""The NaN guard reads a step's loss one step late and names the step that diverged."""

import pytest
import torch

from vipa.errors import TrainingDivergedError
from vipa.training.distributed import DistInfo
from vipa.training.finite import FiniteWatch


def _watch() -> FiniteWatch:
    return FiniteWatch(DistInfo(), torch.device("cpu"))


def test_a_finite_loss_passes_and_is_read_once():
    watch = _watch()
    watch.watch(torch.tensor(0.25), step=1)
    watch.confirm("run/last.safetensors")
    watch.confirm("run/last.safetensors")  # nothing pending: no error, no read


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_raises_when_confirmed_naming_its_step(bad):
    watch = _watch()
    watch.watch(torch.tensor(bad), step=7)  # watching alone never raises: no host wait
    with pytest.raises(TrainingDivergedError, match=r"at step 7; .*run/last.safetensors"):
        watch.confirm("run/last.safetensors")


def test_only_the_last_watched_step_counts():
    watch = _watch()
    watch.watch(torch.tensor(float("nan")), step=3)
    with pytest.raises(TrainingDivergedError):
        watch.confirm("none yet")
    watch.watch(torch.tensor(1.0), step=4)
    watch.confirm("none yet")
