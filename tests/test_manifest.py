"""run.json: written by run, read by status, with the limits as they were resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batcher import DamagedFile, UsageError
from batcher._cli.status import read_status
from batcher._config.limits import LimitTable
from batcher._rundir.manifest import Manifest


def test_the_manifest_round_trips_with_its_resolved_limits(tmp_path: Path) -> None:
    limits_file = tmp_path / "limits.toml"
    limits_file.write_text('["m"]\nrpd = 40\n')
    table = LimitTable.build(tier="gemini-tier1", rpm=10, limits_file=limits_file)
    Manifest("gemini", "m", "mock", 5, ("jobs.jsonl",), "pacific", table).write(tmp_path)
    limits_file.unlink()  # status must not need it any more
    back = Manifest.read(tmp_path)
    assert back is not None
    assert back.limits_for("m") == table.for_model("m")
    assert back.limits_for("gemini-2.5-flash") == table.for_model("gemini-2.5-flash")
    assert (back.provider, back.model, back.total, back.inputs) == (
        "gemini",
        "m",
        5,
        ("jobs.jsonl",),
    )


def test_a_manifest_from_before_reads_its_flags(tmp_path: Path) -> None:
    old = {"provider": "openai", "model": "m", "base_url": "x", "total": 3, "rpm": 60, "tier": None}
    (tmp_path / "run.json").write_text(json.dumps(old))
    back = Manifest.read(tmp_path)
    assert back is not None and back.limits_for("m").rpm == 60


def test_status_reads_limits_from_the_manifest_wherever_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = LimitTable.build(rpd=25)
    Manifest("openai", "m", "x", 4, (), "pacific", table).write(tmp_path / "out")
    (tmp_path / "out" / "ledger.json").write_text(
        json.dumps({"models": {"m": {"day": "2027-01-15", "count": 3}}})
    )
    monkeypatch.chdir(tmp_path.parent)
    status = read_status(tmp_path / "out", 1_800_000_000.0 + 3600)
    assert status.limits["m"].rpd == 25
    assert "quota today m: 3 of 25 requests" in status.lines()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"provider": "openai"}'])
def test_a_damaged_manifest_is_named(tmp_path: Path, text: str) -> None:
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(DamagedFile, match=r"run\.json cannot be read"):
        Manifest.read(tmp_path)


def test_another_model_is_refused(tmp_path: Path) -> None:
    Manifest("openai", "m", "x", 1).write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back is not None
    with pytest.raises(UsageError, match="holds a run with --model m"):
        back.check_same_run("openai", "other", tmp_path)
