"""The plugin contracts' conformance suite: what `vipa plugins check NAME` runs.

Each check builds what the plugin registered at a small size and tests one part
of the contract, so a plugin's author learns everything that is missing in one
run. For a plugin repository's own tests::

    from vipa_plugins.conformance import assert_conforms

    def test_my_encoder_fills_the_vipa_contract():
        assert_conforms("my-encoder")
"""

from __future__ import annotations

import inspect
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipa.config import ModelConfig, apply_overrides
from vipa.errors import UnknownNameError, UsageError, first_line
from vipa.inference.export import export_model
from vipa.model import VipaLoss, build_model
from vipa_plugins import encoder_checks as checks
from vipa_plugins import legacy, registry, versions
from vipa_plugins.contracts import TrainingLogger, encoder_problems
from vipa_plugins.encoder_checks import MAX_TEXT_LEN, PHRASES, CheckFailed, expect

#: Built-in fusions a third-party encoder must train with; encoders a fusion is tried on.
FUSIONS = ("none", "early", "late")
SMALL = ("image_size=64", "veg.k=4", "decoder.dim=16", f"max_text_len={MAX_TEXT_LEN}")


@dataclass
class Result:
    """One check: ``status`` is ``pass``, ``fail`` or ``skip``; ``detail`` says why."""

    check: str
    status: str
    detail: str = ""

    def line(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.status.upper():4}  {self.check}{detail}"


@dataclass
class Report:
    """Every check run on one registration."""

    kind: str
    name: str
    origin: str
    results: list[Result] = field(default_factory=list)
    on_result: Callable[[Result], None] | None = None  # told of each result as it comes

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == "fail"]

    def run(self, check: str, function: Callable[[], str | None]) -> Any:
        """Run one check; a CheckFailed or any error from the plugin is its failure."""
        try:
            detail = function()
        except CheckFailed as failure:
            return self.add(Result(check, "fail", str(failure)))
        except Exception as error:  # the plugin's code can raise anything
            return self.add(Result(check, "fail", f"{type(error).__name__}: {first_line(error)}"))
        return self.add(Result(check, "pass", detail or ""))

    def add(self, result: Result) -> bool:
        """Record ``result``; True when it did not fail."""
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        return result.status != "fail"

    def skip(self, check: str, why: str) -> None:
        self.add(Result(check, "skip", why))


def find(name: str) -> registry.Registration:
    """The encoder, fusion or logger registered as ``name``; a one-line error otherwise."""
    found = {kind: registry.collect(kind) for kind in registry.KINDS}
    for kind in ("encoder", "fusion", "logger"):
        if name in found[kind]:
            return found[kind][name]
    if name in found["tokenizer"]:
        raise UsageError(f"{name!r} is a tokenizer: it is checked with the encoder that "
                         "uses it (vipa plugins check ENCODER)")
    raise UnknownNameError(name, [n for kind in registry.KINDS for n in found[kind]])


def check_plugin(name: str, *, preset: str | None = None, weights: str = "random",
                 on_result: Callable[[Result], None] | None = None) -> Report:
    """Run the conformance suite on the encoder, fusion or logger registered as ``name``.

    ``on_result`` is called with each check's :class:`Result` as soon as it is known.
    """
    registration = find(name)
    report = Report(registration.kind, name, registration.origin, on_result=on_result)
    report.run("contract version", lambda: _contract_version(registration))
    report.run("factory keywords", lambda: _factory_keywords(registration))
    suites = {"encoder": _encoder_suite, "fusion": _fusion_suite, "logger": _logger_suite}
    suites[registration.kind](report, registration, preset, weights)
    return report


def assert_conforms(name: str, **options: Any) -> None:
    """:func:`check_plugin` for pytest: an AssertionError listing every failed check."""
    report = check_plugin(name, **options)
    assert report.ok, f"{report.kind} {name!r} of {report.origin}:\n" + "\n".join(
        r.line() for r in report.failures)


def _contract_version(registration: registry.Registration) -> str:
    support = registration.support
    current = versions.CURRENT[registration.kind]
    expect(support.problem() is None, support.problem() or "")
    if support.contract is None:
        return (f"not declared; this vipa runs {registration.kind} contract {current} "
                f"(register(..., contract={current}) states it)")
    expect(support.contract == current,
           f"written for {registration.kind} contract {support.label}; "
           f"{versions.MIGRATION.get((registration.kind, support.contract), '')}")
    return f"{registration.kind} contract {current}"


def _factory_keywords(registration: registry.Registration) -> str:
    try:
        parameters = inspect.signature(registration.factory).parameters
    except (TypeError, ValueError):
        return "no signature to inspect"
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return "takes **options"
    missing = [k for k in versions.KEYWORDS[registration.kind] if k not in parameters]
    expect(not missing, f"the factory does not take {', '.join(map(repr, missing))}, which "
                        f"{registration.kind} contract {versions.CURRENT[registration.kind]} "
                        f"passes ({versions.SECTION[registration.kind]})")
    return ", ".join(versions.KEYWORDS[registration.kind])


# --- encoders -------------------------------------------------------------------------------


def _encoder_suite(report: Report, registration: registry.Registration, preset: str | None,
                   weights: str) -> None:
    preset = preset or registration.sizes.get("cpu")
    build = {k: v for k, v in {"preset": preset, "weights": weights, "image_size": 64}.items()
             if v is not None}
    built: dict[str, Any] = {}

    def builds() -> str:
        built["raw"] = registry.build(registration, max_text_len=MAX_TEXT_LEN, **build)
        return f"preset {preset or 'default'}, weights {weights}"

    if not report.run("builds", builds):
        return
    raw = built["raw"]
    report.run("tokenizer contract", lambda: checks.tokenizer_member(raw))
    encoder = legacy.wrap(raw, registration, build, MAX_TEXT_LEN)
    problems = encoder_problems(encoder)
    report.run("members", lambda: expect(not problems, "; ".join(problems)))
    if problems:
        return
    report.run("stages", lambda: checks.stages(encoder))
    report.run("text features", lambda: checks.text_features(encoder))
    report.run("tokenizer", lambda: checks.tokenizer(encoder.tokenizer))
    overrides = [f"encoder.name={registration.name}", f"encoder.weights={weights}", *SMALL]
    if preset is not None:
        overrides.append(f"encoder.preset={preset}")
    _model_checks(report, overrides)


# --- what every kind of model plugin goes through ---------------------------------------------


def _model_checks(report: Report, overrides: list[str],
                  fusions: tuple[str, ...] = FUSIONS) -> None:
    """One training step with each fusion, then an ONNX export with parity."""
    models = {}
    for fusion in fusions:
        config = apply_overrides(ModelConfig(), [*overrides, f"fusion.name={fusion}"])
        report.run(f"training step, fusion {fusion}",
                   lambda c=config, f=fusion: _training_step(c, models, f))
    if not models:
        return
    last = next(reversed(models))
    if find_spec("onnx") is None or find_spec("onnxruntime") is None:
        report.skip("ONNX export parity", 'needs onnx and onnxruntime: pip install "vipa[export]"')
        return
    report.run(f"ONNX export parity, fusion {last}", lambda: _onnx(models[last]))


def _training_step(config: ModelConfig, models: dict[str, Any], fusion: str) -> str:
    torch.manual_seed(0)
    model = build_model(config).train()
    model.encoder.tokenizer.fit(list(PHRASES))
    images = torch.rand(2, 3, config.image_size, config.image_size)
    masks = torch.zeros(2, 1, config.image_size, config.image_size)
    masks[0, :, :32, :24] = 1
    masks[1, :, 20:, 30:] = 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = VipaLoss(config.loss)(model(images, *model.tokenize(list(PHRASES))), masks).total
    expect(math.isfinite(loss.item()), f"the loss is {loss.item()}")
    loss.backward()
    optimizer.step()
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expect("encoder" in moved or not any(p.requires_grad for p in model.encoder.parameters()),
           "no encoder weight changed in a training step: its stages are not in the graph")
    models[fusion] = model
    return f"loss {loss.item():.3f}, updated: {', '.join(sorted(moved))}"


def _onnx(model: Any) -> str:
    with tempfile.TemporaryDirectory(prefix="vipa-check-") as folder:
        result = export_model(model, Path(folder) / "model.onnx", "onnx")
    return f"max abs diff {result.max_abs_diff:.2g}"


# --- fusions and loggers ----------------------------------------------------------------------


def _fusion_suite(report: Report, registration: registry.Registration, preset: str | None,
                  weights: str) -> None:
    encoder = registry.create_encoder("tiny", preset="micro", max_text_len=MAX_TEXT_LEN)

    @torch.no_grad()
    def stages() -> str:
        fusion = registry.build(registration, out_channels=encoder.out_channels,
                                text_dim=encoder.text_dim)
        text = encoder.encode_text(*encoder.tokenize(list(PHRASES)))
        features = fusion.eval()(encoder, torch.rand(2, 3, 64, 64), text)
        want = [(2, c, 64 // s, 64 // s) for c, s in zip(encoder.out_channels, encoder.strides,
                                                         strict=True)]
        expect([tuple(f.shape) for f in features] == want,
               f"gave maps {[tuple(f.shape) for f in features]}, expected {want}")
        return f"{len(features)} maps on the tiny encoder"

    report.run("stages", stages)
    _model_checks(report, ["encoder.name=tiny", "encoder.preset=micro", *SMALL],
                  fusions=(registration.name,))


def _logger_suite(report: Report, registration: registry.Registration, preset: str | None,
                  weights: str) -> None:
    def logs() -> str:
        with tempfile.TemporaryDirectory(prefix="vipa-check-") as folder:
            tracker = registry.build(registration, run_dir=Path(folder), config={})
            expect(isinstance(tracker, TrainingLogger), f"built a {type(tracker).__name__}, not "
                                                        "a vipa_plugins.contracts.TrainingLogger")
            try:
                tracker.log_scalars(1, {"train/loss": 0.5, "val/oIoU": 0.25})
                tracker.log_images(1, {"val/sample": np.zeros((8, 8, 3), np.uint8)})
            finally:
                tracker.close()
        return "log_scalars, log_images, close"

    report.run("logs", logs)


__all__ = ["Report", "Result", "assert_conforms", "check_plugin", "find"]
