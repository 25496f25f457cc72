"""Hook specifications: what a vipa plugin can provide.

Hooks follow the register-callback style: the host passes ``register`` and
keeps validation, duplicate detection and bookkeeping to itself, so plugins
stay a few lines long.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT_NAME = "vipa"
ENTRY_POINT_GROUP = "vipa"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback handed to registration hooks.

    ``contract`` is the version of the kind's contract the plugin was written for
    (:data:`vipa_plugins.versions.CURRENT`); vipa refuses, in one line, a version it
    cannot run, and runs a deprecated one through its compatibility path.
    """

    def __call__(self, name: str, factory: Any, *, description: str = "",
                 presets: tuple[str, ...] = (), sizes: dict[str, str] | None = None,
                 contract: int | None = None) -> None: ...


@hookspec
def register_encoders(register: Register) -> None:
    """Register vision-language encoders.

    Call ``register(name, factory, description=...)`` once per encoder, where
    ``factory(preset=None, weights="random", image_size=None, max_text_len=20,
    **options)`` returns a :class:`vipa_plugins.contracts.VisionLanguageEncoder`.

    Every factory accepts these four keywords: ``preset`` (a size name such
    as ``micro`` or ``base``; None = the encoder's default), ``weights``
    (``random``, ``pretrained``, or a local path), ``image_size`` (the
    square input resolution the model will run at; encoders that do not care
    ignore it) and ``max_text_len`` (the ``max_len`` its tokenizer must cut
    phrases to). Unknown presets raise ``vipa.errors.ConfigError``; weights that
    cannot be found offline raise ``vipa.errors.WeightsNotFoundError``.

    ``presets`` names the size presets the factory accepts (none: it takes
    only ``preset=None``); ``sizes`` maps a recipe's size (``cpu``, ``paper``)
    onto one of them, so ``vipa train --encoder NAME`` with the ``cpu`` recipe
    builds this encoder's CPU size. A size the encoder does not map builds its
    default (``preset=None``).
    """


@hookspec
def register_fusions(register: Register) -> None:
    """Register fusion strategies.

    Call ``register(name, factory, description=...)`` once per fusion, where
    ``factory(out_channels=..., text_dim=..., **options)`` returns a
    :class:`vipa_plugins.contracts.Fusion`.
    """


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register tokenizer classes, so a tokenizer can be rebuilt without its encoder.

    Call ``register(name, cls, description=...)`` once per
    :class:`vipa_plugins.contracts.Tokenizer` subclass an encoder of the plugin
    uses; checkpoints and export sidecars store the name beside
    ``tokenizer.state()`` and rebuild it with ``cls.from_state(state)``.
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register training loggers (experiment trackers: TensorBoard, W&B, MLflow, ...).

    Call ``register(name, factory, description=...)`` once per logger, where
    ``factory(run_dir=..., config=...)`` returns a
    :class:`vipa_plugins.contracts.TrainingLogger`; ``config`` is the run's
    config as a dict. ``vipa train --logger NAME`` opens it on rank 0 and feeds
    it the run's scalars (losses, lr, samples/s, validation metrics per kind)
    and, at each validation, a few predictions as images.
    """
