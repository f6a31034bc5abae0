"""README.md stays true: CI runs its test command, and every CLI flag is documented."""

from __future__ import annotations

import re
from pathlib import Path

from batcher._cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _commands()[1]
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command  # after installing what the tests need (faketime)


_FLAG = re.compile(r"(?<![\w-])(--?[a-z][\w-]*)")


def _documented_flags(name: str, readme: str) -> set[str]:
    """The flags README gives a command: in its heading (``### `batcher plan JOBS... [--tier
    NAME] ...```), and for ``run``, whose heading says ``[options]``, in the first cells of the
    flag table under it."""
    heading = re.search(rf"^### `batcher {re.escape(name)}\b([^`]*)`", readme, re.M)
    assert heading is not None, f"no heading for batcher {name}"
    if name != "run":
        return set(_FLAG.findall(heading.group(1)))
    section = readme[heading.end() : readme.index("\n### ", heading.end())]
    cells = [
        re.split(r"(?<!\\)\|", line)[1] for line in section.splitlines() if line.startswith("| `")
    ]
    return {flag for cell in cells for flag in _FLAG.findall(cell)}


def test_every_cli_flag_is_documented_in_its_commands_heading() -> None:
    """Both ways: every flag a command's argparse takes is in its README heading (``run``: its
    flag table), by one of its spellings, and every flag there is one the command takes."""
    readme = (ROOT / "README.md").read_text()
    subparsers = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in subparsers.items():
        documented = _documented_flags(name, readme)
        taken = [a.option_strings for a in sub._actions if a.option_strings]
        taken = [spellings for spellings in taken if spellings != ["-h", "--help"]]
        missing = [spellings[-1] for spellings in taken if not documented & set(spellings)]
        unknown = documented - {flag for spellings in taken for flag in spellings}
        assert (missing, sorted(unknown)) == ([], []), f"batcher {name}"


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
