"""The CLI frame: help, version, `vipa plugins`, and one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from vipa import __version__
from vipa_cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "plugins" in result.output and "referring" in result.output.lower()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"vipa {__version__}"


def test_plugins_table_and_json(fresh_plugins):
    table = runner.invoke(app, ["plugins"])
    assert table.exit_code == 0
    assert "tiny" in table.output and "none" in table.output
    payload = json.loads(runner.invoke(app, ["plugins", "--json"]).output)
    tiny = next(e for e in payload["encoders"] if e["name"] == "tiny")
    assert tiny["distribution"] == "vipa" and tiny["version"] == __version__
    assert payload["broken"] == []


def test_plugins_detail_shows_factory_options(fresh_plugins):
    result = runner.invoke(app, ["plugins", "tiny", "--json"])
    assert result.exit_code == 0
    detail = json.loads(result.output)
    assert detail["kind"] == "encoder"
    assert detail["options"]["weights"] == "'random'"


def test_unknown_name_is_one_line_usage_error(fresh_plugins):
    result = runner.invoke(app, ["plugins", "tinny"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown name 'tinny' (did you mean 'tiny'?)")
    assert "Traceback" not in result.output


def test_broken_plugin_does_not_break_listing(fake_distribution):
    fake_distribution("vipa-broken", "vipa_broken_cli", "import not_a_module_anywhere\n")
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["broken"][0]["distribution"] == "vipa-broken"
    assert "ModuleNotFoundError" in payload["broken"][0]["error"]
    assert any(e["name"] == "tiny" for e in payload["encoders"])
    table = runner.invoke(app, ["plugins"])
    assert table.exit_code == 0 and "failed to load" in table.output
