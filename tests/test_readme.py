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


def test_the_table_of_what_combines_is_the_codes_own() -> None:
    from batcher._engine.support import markdown

    assert markdown() in (ROOT / "README.md").read_text()


def test_every_refusal_of_the_table_is_made_before_anything_is_written(tmp_path: Path) -> None:
    """Each capability a way cannot do is refused by ``Runner`` (or the Ray driver's check)
    naming its flags, and the output directory is not created."""
    import pytest

    from batcher import Runner, RunOptions, UsageError
    from batcher._engine.support import TABLE, check, ways

    asked = {
        "a pool of endpoints": {"pool_file": str(ROOT / "jobs" / "pool.toml")},
        "a spend limit": {"budget": 1.0},
        "typed outputs": {"schema": str(ROOT / "jobs" / "tickets.schema.json")},
        "images answered": {"provider": "gemini", "modalities": ("text", "image")},
        "image options": {"size": "1024x1024"},
        "provider batches": {"mode": "batch"},
        "embeddings": {"api": "embeddings"},
        "OpenAI's Responses API": {"api": "responses"},
        "files through the Files API": {"upload": "always"},
    }
    assert set(asked) == {cap.name for cap in TABLE}
    for cap in TABLE:
        for way, _why in cap.refused.items():
            mode = {"online": "online", "batch": "batch", "ray": "online"}[way]
            kwargs = {**asked[cap.name]}
            if cap.name != "provider batches":
                kwargs["mode"] = mode
            options = RunOptions(**kwargs)
            assert cap.used(options)
            ray = way == "ray"
            assert way in ways(options, ray=ray)
            with pytest.raises(UsageError, match=cap.flags[0].split()[0]):
                check(options, ray=ray)
            if not ray:
                out = tmp_path / f"{cap.name}-{way}"
                with pytest.raises(UsageError, match=cap.flags[0].split()[0]):
                    Runner([], out, options)
                assert not out.exists()
