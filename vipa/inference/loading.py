"""Open a model for inference from what a user names: checkpoint, export, folder or Hub id.

The one place that picks a :class:`~vipa.inference.runtime.Runtime`: an
exported file (``--model``, or any file with a ``.vipa.json`` sidecar) runs
from its sidecar; a checkpoint (default: the latest run's best) runs from its
cached trace on the CPU (:mod:`vipa.inference.traced`), else as a PyTorch
model; a model folder or a Hub id (:mod:`vipa.hub`) runs as a PyTorch model.
"""

from __future__ import annotations

from pathlib import Path

from vipa.errors import DataError, UsageError
from vipa.inference.runtime import (
    Runtime,
    TorchOptions,
    TorchRuntime,
    TorchScriptRuntime,
    load_exported,
)
from vipa.inference.sidecar import sidecar_path


def load_runtime(checkpoint: str | Path | None = None, model: Path | None = None,
                 device: str = "auto", options: TorchOptions = TorchOptions()) -> Runtime:  # noqa: B008
    """``--checkpoint`` (default: the latest run's best; or a folder or Hub id) or ``--model``.

    ``options`` other than the plain ones (``--compile``, ``--precision bf16``,
    ``--channels-last``) run the PyTorch model, never a trace, and are refused for an
    export.
    """
    if model is not None:
        if checkpoint is not None:
            raise UsageError("give either --checkpoint or --model, not both")
        return _exported(Path(model), device, options)
    if checkpoint is None:
        from vipa.training.runs import default_checkpoint

        checkpoint = default_checkpoint()
    return open_model(checkpoint, device, options)


def checkpoint_runtime(checkpoint: Path, device: str,
                       options: TorchOptions = TorchOptions()) -> Runtime:  # noqa: B008
    """On the CPU the checkpoint's (or model folder's) cached trace
    (:mod:`vipa.inference.traced`) with the plain options, else the PyTorch model."""
    from vipa.cache import fast_start_cache_enabled
    from vipa.device import resolve_device
    from vipa.inference.traced import traced_copy

    folder = None
    if checkpoint.is_dir():  # read first: a folder vipa refuses is refused before any trace
        from vipa.hub import read_folder

        folder = read_folder(checkpoint)
    if options.plain and fast_start_cache_enabled() and resolve_device(device).type == "cpu":
        traced = traced_copy(checkpoint)
        if traced is not None:
            return TorchScriptRuntime(traced, "cpu")
    if folder is not None:
        from vipa.checkpoint import build_from

        return TorchRuntime(build_from(folder), device, options)
    return TorchRuntime.from_checkpoint(checkpoint, device, options)


def open_model(source: str | Path, device: str = "auto",
               options: TorchOptions = TorchOptions()) -> Runtime:  # noqa: B008
    """The runtime for ``source``: an export (it has a sidecar), a checkpoint, a model folder
    or a Hub id (``org/name``, ``hf://org/name@revision``)."""
    from vipa.hub import hub_folder, hub_source
    from vipa.training.runs import checkpoint_in

    hub = hub_source(source)
    path = hub_folder(*hub) if hub is not None else checkpoint_in(source)
    if path.is_dir():
        return checkpoint_runtime(path, device, options)
    if path.is_file():
        if sidecar_path(path).is_file():
            return _exported(path, device, options)
        return checkpoint_runtime(path, device, options)
    raise DataError(f"no model at {source}: give a checkpoint (.safetensors), an exported "
                    f"model with its .vipa.json sidecar, a model folder or a Hub id (ORG/NAME)")


def _exported(path: Path, device: str, options: TorchOptions) -> Runtime:
    """An export's runtime; the PyTorch-only options are refused (it runs as exported)."""
    if not options.plain:
        raise UsageError(f"{options.describe()} runs a checkpoint's PyTorch model; {path} is "
                         "an exported model and runs as it was exported")
    return load_exported(path, device)
