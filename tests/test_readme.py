"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(text: str) -> list[str]:
    parts = text.split("```")
    return [parts[i].split("\n", 1)[1].strip() for i in range(1, len(parts), 2)]


def test_ci_runs_the_readme_test_command():
    blocks = _code_blocks((ROOT / "README.md").read_text())
    setup, tests = blocks[0], blocks[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must be the last step of .ci/run"
    assert ci[-1] == tests
    assert setup.startswith("pip install -e ")
