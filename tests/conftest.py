"""Shared fixtures: session cache, isolated plugin manager, fake distributions, one thread."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vipa.config import resolve_config
from vipa.data.synthetic import generate_synthetic
from vipa.inference.onnx_export import EXPORTER_VARIABLE
from vipa.training import train
from vipa_plugins import manager as plugin_manager

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One vipa cache per test session: its synthetic set and traced checkpoints stay out
    of the user's ``~/.cache/vipa`` (subprocesses inherit it through the environment)."""
    cache = tmp_path_factory.mktemp("vipa-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIPA_CACHE", str(cache))
        # The suite's many small ONNX exports go through the legacy exporter (5x faster to
        # export); tests/test_export.py runs the default (dynamo) path by name.
        patch.setenv(EXPORTER_VARIABLE, "legacy")
        yield cache


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """Rediscover entry points before and after the test, so changes never leak."""
    plugin_manager.reset_plugin_manager()
    yield
    plugin_manager.reset_plugin_manager()


@pytest.fixture
def example_plugin(tmp_path: Path, fresh_plugins: None) -> Iterator[Path]:
    """examples/vipa-example-encoder, pip-installed into a folder on sys.path for one test."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "examples" / "vipa-example-encoder", source)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True,
    )
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("vipa_example_encoder", None)


@pytest.fixture
def fake_distribution(tmp_path: Path, fresh_plugins: None) -> Iterator[Callable[..., Path]]:
    """Make an installed-looking distribution (a *.dist-info on sys.path) with one module.

    importlib.metadata finds it exactly as it finds a pip-installed package, so
    plugin discovery goes through the real entry-point mechanism.
    """
    added_paths: list[str] = []
    added_modules: list[str] = []

    def make(dist: str, module: str, source: str, entry_name: str | None = None,
             version: str = "1.0.0") -> Path:
        site = tmp_path / f"site-{dist}"
        site.mkdir()
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[vipa]\n{entry_name or dist} = {module}\n")
        sys.path.insert(0, str(site))
        added_paths.append(str(site))
        added_modules.append(module)
        return site

    yield make
    for path in added_paths:
        sys.path.remove(path)
    for module in added_modules:
        sys.modules.pop(module, None)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: on a shared 2-core machine a second one mostly waits (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



# ---- a small trained model and a photo, shared by the serve and demo tests


@pytest.fixture(scope="session")
def served_checkpoint(tmp_path_factory) -> Path:
    root = generate_synthetic(tmp_path_factory.mktemp("synth"), seed=8, n_train=24, n_val=4,
                              n_test=2, image_size=64)
    options = {"encoder": "tiny", "preset": "micro", "fusion": "late", "data_root": root,
               "image_size": 64, "batch_size": 4, "max_steps": 20, "device": "cpu",
               "output": tmp_path_factory.mktemp("served")}
    cfg = resolve_config("cpu", options, ["veg.k=4", "decoder.dim=16", "train.lr=3e-3",
                                          "train.warmup_steps=0", "train.val_every=1000",
                                          "data.max_val_samples=4"])
    return train(cfg, progress=False).last


@pytest.fixture(scope="session")
def scene_photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "scene.png"
    pixels = np.full((90, 150, 3), 235, np.uint8)
    pixels[20:60, 10:50] = (215, 40, 40)
    pixels[30:80, 90:140] = (40, 80, 215)
    Image.fromarray(pixels).save(path)
    return path


def tiny_train_args(root: Path, run: Path, *sets: str) -> list[str]:
    """`vipa train` arguments for 3 steps of the micro `tiny` model at 32 px on ``root``,
    with ``--set`` for each of ``sets``."""
    return ["train", "--encoder", "tiny", "--preset", "micro", "--data-root", str(root),
            "--image-size", "32", "--batch-size", "4", "--max-steps", "3", "--device", "cpu",
            "--output", str(run), "--no-progress", "--set", "veg.k=4", "--set",
            "decoder.dim=16", *(arg for key in sets for arg in ("--set", key))]


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- device-aware tests: every test with a ``device`` argument runs once per test device


def devices_under_test() -> list[str]:
    """``VIPA_TEST_DEVICES`` (e.g. ``cuda``, ``cpu,cuda``), else the CPU plus CUDA when present.

    ``python -m bench.cuda`` runs tests/test_device.py with ``VIPA_TEST_DEVICES=cuda``.
    """
    spec = os.environ.get("VIPA_TEST_DEVICES", "")
    names = [name.strip() for name in spec.split(",") if name.strip()]
    return names or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", devices_under_test())
