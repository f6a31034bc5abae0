"""README.md stays true: CI runs its test command, and every CLI flag is documented."""

from __future__ import annotations

import re
from pathlib import Path

from batcher._cli.main import _parser

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _commands()[1]
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command  # after installing what the tests need (faketime)


def test_every_cli_flag_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    parser = _parser()
    subparsers = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in subparsers.items():
        assert f"batcher {name}" in readme, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in readme or f"[{flag}" in readme, f"{name} {flag}"
