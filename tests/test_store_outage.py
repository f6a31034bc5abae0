"""A Redis quota store lost mid-run: the lanes spend what they had reserved, then hold (nothing
more is admitted while the store is down) and ask again; the run goes on when it is back, and
ends with exit 75, finished jobs kept, when it stays down past --max-outage. A real
``redis-server`` of the test's own, stopped and started again on its port, under a real run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from batcher import Runner, RunOptions, RunSummary
from batcher._admission.lane import Lane
from batcher._config.limits import Limits, LimitTable
from batcher.mock import MockConfig, MockServer
from tests.helpers import kept_ids, mock_stats, read_results, run_command, wait_for, write_jsonl
from tests.redis_server import RedisProcess

PASSWORD = "s3cret-pw"
RPM = 1200
"""20 requests a second: a block of the day's count is 2 s of that, 40 requests."""


@pytest.fixture
def mock() -> Iterator[MockServer]:
    server = MockServer(MockConfig(limits=LimitTable(everywhere=Limits(rpm=RPM)))).start()
    yield server
    server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own (it is stopped and started again), with a password."""
    server = RedisProcess(tmp_path, password=PASSWORD)
    server.start()
    yield server
    server.stop()


async def _until(ready: Callable[[], bool]) -> None:
    """Poll ``ready()`` on the run's own loop (the lane's counters have no event to wait on);
    the bound only catches a hang."""
    with anyio.fail_after(60):
        while not ready():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def test_a_run_holds_while_its_redis_store_is_down_and_goes_on_when_it_is_back(
    tmp_path: Path, mock: MockServer, redis: RedisProcess
) -> None:
    n = 160
    jobs = [{"id": f"j{i}", "prompt": f"p{i}", "model": "m"} for i in range(n)]
    opts = RunOptions(
        api_key="k",
        base_url=mock.base_url("openai"),
        rpm=RPM,
        quota_store=redis.url,
        max_outage=120,
    )
    seen: dict[str, int] = {}

    async def main() -> RunSummary:
        async with Runner(jobs, tmp_path / "out", opts) as runner:
            summary: list[RunSummary] = []

            async def run() -> None:
                summary.append(await runner.run())

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                lane = _lane(runner)
                await _until(lambda: lane.admitted >= 30)
                quota = lane.quota
                assert quota is not None
                # on the run's loop: nothing is admitted between these lines
                redis.stop()
                seen["bound"] = bound = lane.admitted + quota.left  # what was already reserved
                # the lane spends its block, finds the store gone, and holds, asking again
                await _until(lambda: quota.left == 0 and quota.failures >= 3)
                seen["held"] = lane.admitted
                failures = quota.failures
                await _until(lambda: quota.failures >= failures + 2)
                seen["still"] = lane.admitted
                seen["accepted"] = mock_stats(mock)["accepted"]
                assert lane.admitted == bound and quota.down_since is not None
                redis.start()  # the same port, empty: the run goes on
            return summary[0]

    summary = anyio.run(main)
    # the block reserved before the loss was spent, and not one request beyond it
    assert seen["held"] == seen["still"] == seen["bound"] < n, seen
    assert seen["accepted"] <= seen["bound"], seen
    assert summary.exit_code == 0 and summary.ok == n, summary
    assert set(read_results(tmp_path / "out")) == {f"j{i}" for i in range(n)}
    mock.wait_idle()
    assert mock_stats(mock)["accepted"] == n  # every job sent once


def _lane(runner: Runner) -> Lane:
    assert runner.lanes is not None
    return runner.lanes["m"]  # made here if the run has not made it yet


def test_a_store_down_longer_than_max_outage_ends_the_run_with_75_keeping_what_finished(
    tmp_path: Path, mock: MockServer, redis: RedisProcess
) -> None:
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [{"id": f"j{i}", "prompt": f"p{i}", "model": "m"} for i in range(2000)],
    )
    out = tmp_path / "out"
    cmd = run_command(
        jobs, out, mock.base_url("openai"), "--rpm", str(RPM), "--quota-store", redis.url,
        "--max-outage", "1",
    )  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": "k"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("30 jobs kept", lambda: proc.poll() is not None or len(kept_ids(out)) >= 30)
        redis.stop()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, err
    where = f"redis://127.0.0.1:{redis.port}/0"
    assert f"the quota store at {where} is unreachable" in err, err
    assert PASSWORD not in err
    rows = read_results(out)
    assert 30 <= len(rows) < 2000 and all(r["status"] == "ok" for r in rows.values())
