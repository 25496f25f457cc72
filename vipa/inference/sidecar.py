"""The ``<model>.vipa.json`` sidecar: what running an exported graph needs besides the graph."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vipa.config import ModelConfig, from_dict
from vipa.errors import ConfigError, DataError, first_line

SIDECAR_FORMAT = "vipa-export"
# 2: the tokenizer is a registry record {"name": ..., "state": ...} (as in checkpoints).
# 3: the graph takes ``image_index`` (phrase b is on image image_index[b]); 2 still runs.
# 4: the graph also returns ``presence`` (B,), the probability that the phrase matches
#    anything (1 for a model without ``presence``); 2 and 3 still run.
SIDECAR_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
INPUT_NAMES = ("images", "token_ids", "attention_mask", "image_index")
OUTPUT_NAMES = ("logits", "relevance", "presence")


@dataclass
class Sidecar:
    """Preprocessing, tokenizer and model config of an exported model."""

    format: str
    image_size: int
    max_text_len: int
    threshold: float
    expression_size: int  # retrieved VEG tokens (0: none to draw)
    tokenizer: dict[str, Any]
    model_config: dict[str, Any]
    encoder: str
    vipa_version: str
    checkpoint: str | None = None
    inputs: tuple[str, ...] = INPUT_NAMES  # a version-2 graph lacks image_index
    quantized: str | None = None  # "int8": weights quantised by onnxruntime (vipa export)

    def to_json(self) -> dict[str, Any]:
        return {"sidecar": SIDECAR_FORMAT, "sidecar_version": SIDECAR_VERSION, **asdict(self),
                "outputs": list(OUTPUT_NAMES),
                "image_range": [0.0, 1.0], "resize": "bilinear, antialiased, aspect ignored"}

    def config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.model_config)

    @property
    def has_presence(self) -> bool:
        """Whether the model says "no match" (``model.presence``), so its presence counts."""
        return self.model_config.get("presence", "off") != "off"


def sidecar_path(output: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.vipa.json``."""
    output = Path(output)
    return output.with_name(output.name + ".vipa.json")


def write_sidecar(sidecar: Sidecar, model_path: Path) -> Path:
    path = sidecar_path(model_path)
    try:
        path.write_text(json.dumps(sidecar.to_json(), indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def read_sidecar(model_path: str | Path) -> Sidecar:
    """The sidecar of an exported model; one-line DataError when missing or unreadable."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"exported model {model_path} does not exist")
    path = sidecar_path(model_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing; it holds the tokenizer and preprocessing, "
                        "re-export with `vipa export`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"unreadable export sidecar {path}: {first_line(error)}") from None
    if not isinstance(meta, dict) or meta.get("sidecar") != SIDECAR_FORMAT:
        raise DataError(f"{path} is not a vipa export sidecar")
    if meta.get("sidecar_version") not in READABLE_VERSIONS:
        raise DataError(f"{path} was written by another vipa version (sidecar version "
                        f"{meta.get('sidecar_version', 1)}, need "
                        f"{' or '.join(map(str, READABLE_VERSIONS))}); re-export "
                        "with `vipa export`")
    fields = {name: meta.get(name) for name in Sidecar.__dataclass_fields__}
    fields["inputs"] = tuple(INPUT_NAMES if meta["sidecar_version"] >= 3 else INPUT_NAMES[:3])
    try:
        sidecar = Sidecar(**fields)
        sidecar.config()
    except (TypeError, ConfigError) as error:
        raise DataError(f"export sidecar {path} is incomplete: {first_line(error)}") from None
    return sidecar
