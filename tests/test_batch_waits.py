"""When a batch run looks at its batches: soon after submission, then less often; a wait ends at
the earliest ``--batch-deadline``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batcher.mock import MockConfig, create_app
from tests.helpers import read_results
from tests.test_batchapi import _jobs, _virtual_run
from tests.virtual import VirtualClock

_GEMINI = {"provider": "gemini", "base_url": "http://mock.test/v1beta"}


def test_auto_cancels_a_late_batch_at_its_deadline_not_at_the_next_poll(tmp_path: Path) -> None:
    """A 5 s deadline, 60 s between looks, a batch that would finish at 30 s: it is cancelled at
    5 s and its jobs are answered online then (before, the look at 60 s found it completed)."""
    jobs = _jobs(tmp_path, 4)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=30.0), clock=clock.time)
    summary = _virtual_run(
        tmp_path,
        jobs,
        app,
        clock,
        mode="auto",
        batch_deadline=5.0,
        batch_min=1,
        poll_interval=60.0,
    )
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 0 and len(rows) == 4
    assert {r["via"] for r in rows.values()} == {"online"}
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["cancelled"]
    (batch,) = app.pipeline.batches.batches.values()
    assert batch.ended is not None and batch.ended - clock.start == pytest.approx(5.0)
    assert clock.sleeps[:3] == [2.0, 2.0, 1.0]  # looks at 0, 2, 4 s; the wait ends at 5 s
    assert all(5.0 <= r["finished_at"] - clock.start < 30.0 for r in rows.values())
    assert app.state.batch_lines == 0 and app.state.accepted == 4


@pytest.mark.parametrize("options", [{}, _GEMINI], ids=["openai", "gemini"])
def test_a_small_batch_is_collected_within_seconds_of_finishing(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """A batch done 3 s after its submission, the default 60 s --poll-interval: collected at the
    look 4 s after the submission (looks at 0, 2, 4 s), not a minute later."""
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3.0), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, **options)
    rows = read_results(tmp_path / "out")
    assert summary.ok == 3 and {r["via"] for r in rows.values()} == {"batch"}
    assert clock.sleeps == [2.0, 2.0]
    assert all(r["finished_at"] - clock.start == pytest.approx(4.0) for r in rows.values())


def test_polls_back_off_to_the_poll_interval_and_a_resumed_batch_is_looked_at_once_first(
    tmp_path: Path,
) -> None:
    jobs = _jobs(tmp_path, 2)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=400.0), clock=clock.time)
    assert _virtual_run(tmp_path, jobs, app, clock, poll_interval=30.0).ok == 2
    assert clock.sleeps[:7] == [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert set(clock.sleeps[5:-1]) == {30.0}
    # a batch an earlier run left: one look at once, then every --poll-interval (it is old)
    (tmp_path / "more").mkdir()
    jobs2 = _jobs(tmp_path / "more", 3)
    assert _virtual_run(tmp_path / "more", jobs2, app, clock, no_wait=True).exit_code == 6
    clock.start += 100.0
    clock.sleeps.clear()
    assert _virtual_run(tmp_path / "more", jobs2, app, clock, poll_interval=60.0).ok == 3
    assert clock.sleeps == [60.0] * 5  # looks at ages 100 (at once), 160, ..., 400: done
