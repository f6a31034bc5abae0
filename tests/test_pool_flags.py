"""Nothing given on the command line is silently ignored, and every check that can be made before
the first request is made then (issue 22): bad input into a new directory leaves nothing there."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher._cli import main
from tests.helpers import write_jsonl


def test_bad_input_into_a_new_directory_leaves_nothing_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b"}])
    out = tmp_path / "out"
    assert main(["run", str(jobs), "--out", str(out), "--mock", "instant", "--no-progress"]) == 2
    assert f"{jobs}:1 (job 'a'): no model" in capsys.readouterr().err
    assert not out.exists()
