"""The attempt log: every request of a run, 429s and retries included, in ``DIR/attempts/``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batcher._config.limits import Limits, LimitTable
from batcher._rundir.attempts import Attempt, AttemptLog
from batcher._rundir.results import iter_rows
from batcher.mock import MockConfig, MockServer
from tests.helpers import mock_stats, read_results, run_cli, write_jsonl

pytestmark = pytest.mark.usefixtures("api_keys")


def test_every_request_is_logged_with_its_429s_and_retries(
    tmp_path: Path, start_mock: Callable[[MockConfig], MockServer]
) -> None:
    # the mock allows 20 requests a day, which the run is not told of: the 21st meets a 429
    # naming the daily quota and the run stops (exit 3); two jobs get a 503 twice, then pass
    server = start_mock(MockConfig(limits=LimitTable(everywhere=Limits(rpd=20))))
    rows = [{"id": f"flaky{i}", "prompt": f"wobbly {i} [[flaky:2]]"} for i in range(2)]
    rows += [{"id": f"j{i:02d}", "prompt": f"tell me {i}"} for i in range(24)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--model", "gemini-2.5-flash", "--max-concurrency", "4", "--on-daily-limit", "exit")
    assert run_cli(server, "gemini", jobs, out, *flags) == 3

    log = pq.read_table(out / "attempts").to_pylist()  # the parts alone: the journal is _journal
    stats = mock_stats(server)
    assert len(log) == stats["requests"]
    outcomes = Counter((a["outcome"], a["http_status"]) for a in log)
    assert outcomes[("ok", 200)] == stats["by_status"]["200"] == len(read_results(out))
    assert outcomes[("rate_limited", 429)] == stats["by_status"]["429"] > 0
    assert outcomes[("retryable", 503)] == stats["by_status"]["503"] > 0
    for a in log:
        assert a["model"] == "gemini-2.5-flash"
        assert a["endpoint"] == "default"  # its name, as in the results (a pool names several)
        assert a["host"] == server.base_url("gemini").split("/")[2]
        assert a["latency_ms"] >= 0 and a["waited_ms"] >= 0 and a["sent_at"] > 1e9
        assert "g-test" not in repr(a)  # the key never
        if a["outcome"] == "ok":
            assert a["input_tokens"] and a["output_tokens"]
        if a["outcome"] == "rate_limited":
            assert a["retry_after"] is not None and a["error"]

    results = read_results(out)
    per_job = Counter(a["job_id"] for a in log)
    assert len(results) < len(rows)
    for job_id, row in results.items():
        assert row["attempts"] == per_job[job_id]
        numbers = sorted(a["attempt"] for a in log if a["job_id"] == job_id)
        assert numbers == list(range(1, per_job[job_id] + 1))
    for job_id in ("flaky0", "flaky1"):
        if job_id in results:  # a finished flaky job was retried past its two 503s
            tries = sorted((a["attempt"], a["outcome"]) for a in log if a["job_id"] == job_id)
            assert [o for _, o in tries] == ["retryable", "retryable", "ok"]


def test_a_crash_leaves_attempts_in_the_journal_and_the_next_open_compacts_them(
    tmp_path: Path,
) -> None:
    log = AttemptLog(tmp_path, segment_size=3)
    log.open()
    for i in range(5):
        seq = log.append(Attempt(f"j{i}", 1, "m", "host:1", 1.0e9 + i, 0.0, 12.5, "ok", 200, 3, 4))
        if seq is not None:
            log.compact(seq)
    log.rotate()  # closed, not compacted: as a crash leaves it
    # the second segment (two attempts) stays in the journal; a reader sees all five
    assert [r["job_id"] for r in iter_rows(tmp_path, ["job_id"], stream="attempts")] == [
        f"j{i}" for i in range(5)
    ]
    again = AttemptLog(tmp_path)
    again.open()
    assert not list((tmp_path / "attempts" / "_journal").iterdir())
    table = pq.read_table(tmp_path / "attempts")
    assert table.column("job_id").to_pylist() == [f"j{i}" for i in range(5)]
    assert table.column("output_tokens").to_pylist() == [4] * 5
