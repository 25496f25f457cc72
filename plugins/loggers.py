"""Built-in training loggers, registered through the plugin hooks like any third party's.

- ``tensorboard``: event files under ``<run>/tensorboard`` written with
  ``torch.utils.tensorboard`` (``pip install "vipa[tensorboard]"``); read them with
  ``tensorboard --logdir <run>``.
"""

from __future__ import annotations

from vipa_plugins import hookimpl


@hookimpl
def register_loggers(register) -> None:
    register("tensorboard", "vipa.training.trackers:TensorBoardLogger",
             description="TensorBoard event files in the run directory (torch.utils.tensorboard)",
             contract=1)
