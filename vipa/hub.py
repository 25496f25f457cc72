"""Models shared the Hugging Face Hub's way: a model folder, read from a path or a Hub id.

A model folder (written by ``vipa package``) holds ``model.safetensors``
(weights only), ``config.json`` (model config, tokenizer state,
preprocessing, the run's validation metrics) and ``README.md`` (a model card
with YAML front matter). Reading one runs no code from it: weights come from
safetensors only, configuration from JSON only, and the encoder and fusion it
names must already be installed plugins. A Hub id (``org/name``,
``hf://org/name``, ``org/name@revision``) resolves through
``huggingface_hub``: the HF cache first, the network only when the hub is
on and reachable.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

from vipa.errors import CheckpointError, DataError, one_line

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FOLDER_FORMAT = "vipa-model"
FOLDER_VERSION = 1
# Weight files that unpickle (and so can run code): never read.
PICKLES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt", "model.pkl")
# Keys with which other libraries' configs name code to import: refused.
CODE_KEYS = ("auto_map", "custom_code", "trust_remote_code", "custom_pipelines")
HUB_HOST = "huggingface.co"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True when the user switched the hub off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    Read from the environment on every call (huggingface_hub reads it once at
    import), so setting the variable at run time is honoured.
    """
    return any(os.environ.get(name, "").strip().lower() in _TRUE
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds.

    DNS lookups ignore socket timeouts, so the probe runs in a daemon thread
    that is abandoned when it takes too long.
    """
    if hub_offline():
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def hub_source(source: str | os.PathLike[str]) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``source`` names a Hub model, else None.

    ``hf://org/name[@rev]`` always does; ``org/name[@rev]`` does when no such
    local path exists and it does not end like a model file (``.safetensors``, ...).
    """
    text = str(source)
    explicit = text.startswith("hf://")
    if not explicit and (Path(text).expanduser().exists()
                         or text.endswith((".safetensors", ".onnx", ".pt", ".pt2"))):
        return None  # a local path (a missing file is reported as one)
    repo, _, revision = text.removeprefix("hf://").partition("@")
    if not _REPO_ID.match(repo):
        if explicit:
            raise DataError(f"{text} is not a Hub id: use hf://ORG/NAME or hf://ORG/NAME@REVISION")
        return None
    return repo, revision or None


def hub_folder(repo_id: str, revision: str | None = None) -> Path:
    """The model folder of ``repo_id`` in the HF cache, downloaded when missing and possible."""
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    local_only = offline or not hub_reachable()
    named = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=local_only,
                                      allow_patterns=[WEIGHTS, CONFIG, CARD]))
    except Exception as error:  # noqa: BLE001 - every hub failure is "not found" to the user
        why = ("HF_HUB_OFFLINE is set" if offline else f"{HUB_HOST} unreachable" if local_only
               else type(error).__name__)
        raise DataError(one_line(f"model {named} not found: looked for it in the Hugging Face "
                                 f"cache ({why}); pass a local checkpoint or model folder, or "
                                 f"go online")) from None


def _read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, after the refusals: pickled weights, code to import."""
    pickles = [name for name in PICKLES if (folder / name).exists()]
    if not (folder / WEIGHTS).is_file():
        found = f"only pickled weights ({', '.join(pickles)}), which vipa never loads" \
            if pickles else f"no {WEIGHTS}"
        raise CheckpointError(f"refused model folder {folder}: {found}")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"model folder {folder} has no readable {CONFIG}: "
                              f"{one_line(error)[:120]}") from None
    code = [key for key in CODE_KEYS if key in config]
    if code:
        raise CheckpointError(f"refused model folder {folder}: {CONFIG} names code to import "
                              f"({', '.join(code)}); vipa runs only installed plugins")
    if config.get("format") != FOLDER_FORMAT:
        raise CheckpointError(f"{folder} is not a vipa model folder ({CONFIG} has no "
                              f"format {FOLDER_FORMAT!r})")
    return config


def read_folder(folder: str | os.PathLike[str]):  # noqa: ANN201 - a vipa.checkpoint.Checkpoint
    """A model folder as a :class:`~vipa.checkpoint.Checkpoint` (nothing built yet)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vipa.checkpoint import Checkpoint
    from vipa.config import ModelConfig, from_dict
    from vipa.config.validate import validate_model
    from vipa.errors import ConfigError

    folder = Path(folder)
    config = _read_config(folder)
    try:
        model_config = from_dict(ModelConfig, config["model_config"])
        validate_model(model_config)
        tensors = load_file(str(folder / WEIGHTS))
    except (KeyError, ValueError, ConfigError, SafetensorError, OSError) as error:
        raise CheckpointError(f"model folder {folder} is unreadable: "
                              f"{one_line(error)[:160]}") from None
    training = config.get("training", {})
    return Checkpoint(folder / WEIGHTS, model_config, tensors, config.get("tokenizer"),
                      int(training.get("step", 0)), int(training.get("epoch", 0)),
                      training.get("metrics", {}), str(config.get("vipa_version", "unknown")))
