"""Runs sharing one account's budget across processes: two ``batcher run`` subprocesses against
one mock with one daily limit count one RPD between them (through the local SQLite store, and
through Redis), and a process killed holding a lease does not keep its share."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from batcher._admission.quota import LEASE_TTL, Account
from batcher._admission.quota._redis import RedisStore
from batcher._config.limits import Limits, LimitTable
from batcher.mock import MockConfig, MockServer
from tests.helpers import mock_stats, read_results, run_command, write_jsonl

KEY = "shared-key"


def _jobs(path: Path, prefix: str, n: int) -> Path:
    return write_jsonl(
        path, [{"id": f"{prefix}{i}", "prompt": f"p{i}", "model": "m"} for i in range(n)]
    )


def _runs(
    tmp_path: Path, server: MockServer, n_jobs: int, *flags: str
) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "SHARED_KEY": KEY}
    procs = []
    for who in ("a", "b"):
        jobs = _jobs(tmp_path / f"{who}.jsonl", who, n_jobs)
        cmd = run_command(
            jobs,
            tmp_path / f"out-{who}",
            server.base_url("openai"),
            "--api-key-env",
            "SHARED_KEY",
            "--max-concurrency",
            "4",
            *flags,
        )
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.parametrize("store", ["local", "redis"])
def test_two_runs_on_one_key_count_one_rpd_between_them(
    tmp_path: Path, start_mock: object, store: str, request: pytest.FixtureRequest
) -> None:
    limits = LimitTable(everywhere=Limits(rpd=20))
    server = MockServer(MockConfig(limits=limits)).start()
    try:
        flags = ["--rpd", "20", "--on-daily-limit", "exit"]
        if store == "redis":
            flags += ["--quota-store", request.getfixturevalue("redis_url")]
        procs = _runs(tmp_path, server, 25, *flags)
        errs = [p.communicate(timeout=60)[1] for p in procs]
        codes = [p.returncode for p in procs]
        stats = mock_stats(server)
    finally:
        server.stop()
    # together they sent the day's 20 requests and no more: the mock refused none
    assert stats["accepted"] == 20 and stats["rejected"] == 0, stats
    done = [len(read_results(tmp_path / f"out-{w}")) for w in "ab"]
    # which run sends first, and how much, is up to the scheduler of a loaded machine; that they
    # sent 20 between them, and both stopped for the day, is the shared count
    assert sum(done) == 20, done
    assert codes == [3, 3], errs  # each stopped with jobs left for tomorrow
    assert any("counted across the runs sharing key $SHARED_KEY" in e for e in errs), errs
    status_flags = ["--quota-store", flags[-1]] if store == "redis" else []
    status = subprocess.run(
        [sys.executable, "-m", "batcher", "status", str(tmp_path / "out-a"), *status_flags],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # this run's own count, and what both counted in the shared store
    assert f"quota today m: {done[0]:,} of 20 requests" in status, status
    host = server.base_url("openai").split("/")[2]  # 127.0.0.1:PORT
    label = Account.of_key(server.base_url("openai"), KEY, "$SHARED_KEY").label
    assert label == f"key $SHARED_KEY #{_fingerprint(KEY)} at {host}"
    assert f"all runs today, {label}, m: 20 requests" in status, status


def test_a_run_killed_holding_a_lease_and_a_block_does_not_keep_them(
    tmp_path: Path, redis_url: str
) -> None:
    server = MockServer(MockConfig(limits=LimitTable(everywhere=Limits(rpm=600)))).start()
    try:
        env = {**os.environ, "SHARED_KEY": KEY}
        jobs = _jobs(tmp_path / "a.jsonl", "a", 2000)
        cmd = run_command(
            jobs,
            tmp_path / "out",
            server.base_url("openai"),
            "--api-key-env",
            "SHARED_KEY",
            "--rpm",
            "600",
            "--quota-store",
            redis_url,
        )
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while mock_stats(server)["accepted"] < 30:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        server.wait_idle()  # the killed run's last requests are counted
        accepted = mock_stats(server)["accepted"]
    finally:
        server.stop()
    account = Account.of_key(server.base_url("openai"), KEY, "$SHARED_KEY")

    async def after() -> tuple[int, int, int]:
        store = RedisStore(redis_url)
        now = time.time()
        # the dead run's lease is still counted now, and lapses within LEASE_TTL
        still = await store.join(account, "m", "probe", active=False, ttl=1, now=now)
        later = await store.join(
            account, "m", "probe", active=False, ttl=1, now=now + LEASE_TTL + 1
        )
        day = max((s.count for s in await store.spent(_today())), default=0)
        await store.aclose()
        return still, later, day

    still, later, counted = anyio.run(after)
    assert (still, later) == (1, 0)
    # the day's count errs high by at most the unspent block (2 s of the rate: 20 requests)
    assert accepted <= counted <= accepted + 20, (accepted, counted)


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:6]


def _today() -> str:
    from batcher._core.clock import quota_day

    return quota_day(time.time()).isoformat()


@pytest.mark.parametrize("store", ["local", "redis"])
def test_a_mock_run_keeps_its_quota_to_itself_and_status_lists_nothing_of_it(
    tmp_path: Path, state_dir: Path, store: str, request: pytest.FixtureRequest
) -> None:
    from batcher._cli.main import main

    flags = []
    if store == "redis":
        url = request.getfixturevalue("redis_url")
        flags = ["--quota-store", url]
    jobs = _jobs(tmp_path / "a.jsonl", "a", 5)
    out = tmp_path / "out"
    assert main(["run", str(jobs), "--out", str(out), "--mock", "--no-progress", *flags]) == 0
    assert len(read_results(out)) == 5
    if store == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            assert client.keys("*") == []  # not a lease, a count or a label
        finally:
            client.close()
    else:
        path = state_dir / "quota.sqlite3"
        if path.exists():
            import sqlite3

            db = sqlite3.connect(path)
            try:
                assert db.execute("SELECT COUNT(*) FROM day").fetchone() == (0,)
                assert db.execute("SELECT COUNT(*) FROM account").fetchone() == (0,)
            finally:
                db.close()
    status = subprocess.run(
        [sys.executable, "-m", "batcher", "status", str(out), *flags],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BATCHER_STATE_DIR": str(state_dir)},
    ).stdout
    assert "done 5 / 5" in status and "all runs today" not in status, status
