"""``batcher status``: what it says of the time left, read at a fixed moment."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher._cli.main import main
from batcher._cli.status import RunStatus, read_status
from batcher._config.limits import Limits
from batcher._rundir.manifest import Manifest
from batcher._rundir.results import iter_status


def _status(spent: int, limits: Limits, tier: str | None = None) -> RunStatus:
    return RunStatus(
        total=100,
        ok=40,
        errors=0,
        error_kinds={},
        spent_today={"m": spent},
        limits={"m": limits},
        next_reset=10_000.0 + 2 * 3600 + 5 * 60,
        pace=6000.0,  # a fast run before the quota ran out
        now=10_000.0,
        tier=tier,
    )


def test_a_spent_daily_quota_says_the_rest_waits_for_the_reset() -> None:
    lines = _status(40, Limits(rpm=600, rpd=40)).lines()
    assert "daily quota spent (m): the remaining 60 jobs wait for the reset, 2h05m00s from now" in (
        lines
    )
    assert not any("pace" in line or "RPM" in line for line in lines)


def test_the_ceiling_is_named_by_where_it_came_from() -> None:
    lines = _status(40, Limits(rpm=600, rpd=1000)).lines()
    assert "at the RPM limit (600 RPM): 0m06s left" in lines
    assert "at the recent pace (6,000 jobs/min): 0m00s left" in lines
    lines = _status(40, Limits(rpm=600), tier="openai-tier1").lines()
    assert "at the openai-tier1 ceiling (600 RPM): 0m06s left" in lines
    assert not any("tier's" in line for line in lines)


def test_status_after_exit_3_on_the_mock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = Path(__file__).parents[1] / "jobs" / "example.jsonl"
    out = tmp_path / "out"
    args = ["run", str(jobs), "--out", str(out), "--mock", "--model", "gpt-4o-mini"]
    flags = ["--rpm", "600", "--rpd", "10", "--on-daily-limit", "exit", "--no-progress"]
    assert main([*args, *flags]) == 3
    assert Manifest.read(out) is not None
    # read at the moment the last job finished: the same quota day, whatever the clock says
    now = max(t for *_, t in iter_status(out) if t is not None)
    lines = read_status(out, now).lines()
    assert "remaining 20" in lines
    assert any(
        line.startswith("daily quota spent (gpt-4o-mini): the remaining 20 jobs") for line in lines
    )
    assert not any("left" in line for line in lines), lines


def test_status_sums_every_part_and_paces_the_last_ten_minutes(tmp_path: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tests.synthetic_run import write_run

    run = write_run(tmp_path / "run", 30_000)  # six parts, finishes over an hour
    results = pq.read_table(run.out / "results")
    status = read_status(run.out, run.end)
    ok = pc.sum(pc.equal(results["status"], "ok")).as_py()
    assert (status.ok, status.errors, status.remaining) == (ok, 30_000 - ok, 0)
    errors = results.filter(pc.equal(results["status"], "error"))
    kinds = {r["values"]: r["counts"] for r in pc.value_counts(errors["error_kind"]).to_pylist()}
    assert status.error_kinds == kinds and len(kinds) == 4
    times = sorted(results["finished_at"].to_pylist())
    recent = [t for t in times if t >= times[-1] - 600]
    assert status.pace == (len(recent) - 1) / (recent[-1] - recent[0]) * 60
    assert len(recent) < len(times) / 2
