"""Shared fixtures: an isolated plugin manager, fake installed distributions, one thread."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from vipa_plugins import manager as plugin_manager


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """Rediscover entry points before and after the test, so changes never leak."""
    plugin_manager.reset_plugin_manager()
    yield
    plugin_manager.reset_plugin_manager()


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

