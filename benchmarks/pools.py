"""Pools and shared quotas against mock providers in their own processes: achieved rate over the
ceiling, the 429 share, and who did the work.

- pool-two-endpoints: one run, a pool of two endpoints (two mock servers, 600 RPM each, OpenAI
  limits quantized per second): the ceiling is their sum, 1,200 RPM.
- pool-bad-key: the same pool, one endpoint's key refused: every job is done by the other.
- two-runs-local / two-runs-redis: two ``batcher run`` processes on one key against one mock at
  1,200 RPM, sharing the budget through the local SQLite store or a Redis server (redis-server
  started here); the day's count in the store against what the mock accepted (one RPD).
- store-admissions: admissions per second through a lane drawing day blocks from each store
  (no RPM limit, so the store's round trips are all there is), against a bare lane.

Rates are measured at the servers: accepted requests per minute between the first and last
accepted request of all runs, over the ceiling.

    python benchmarks/pools.py [--minutes 1] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from _common import free_port, mock_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batcher._admission.lane import Lane
from batcher._admission.quota import (
    Account,
    MemoryStore,
    QuotaStore,
    SharedQuota,
    SqliteStore,
    spent_today,
)
from batcher._admission.quota._redis import RedisStore
from batcher._config.limits import Limits
from batcher._core.clock import SystemClock

RPM = 600


def write_jobs(path: Path, n: int, prefix: str = "j") -> Path:
    with path.open("w") as f:
        for i in range(n):
            line = {
                "id": f"{prefix}{i}",
                "prompt": f"Job {i}: one sentence.",
                "model": "bench-model",
            }
            f.write(json.dumps(line) + "\n")
    return path


def batcher(jobs: Path, out: Path, *flags: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "batcher", "run", str(jobs), "--out", str(out), "--no-progress"]
    return subprocess.Popen(
        [*cmd, "--max-concurrency", "32", *flags], env=env, stdout=subprocess.DEVNULL
    )


def measure(stats: list[dict[str, Any]], ceiling: float) -> dict[str, float]:
    accepted = sum(s["accepted"] for s in stats)
    rejected = sum(s["rejected"] for s in stats)
    first = min(s["first_accepted"] for s in stats if s["first_accepted"])
    last = max(s["last_accepted"] for s in stats if s["last_accepted"])
    minutes = (last - first) / 60
    achieved = (accepted - 1) / minutes
    return {
        "achieved": achieved,
        "efficiency": achieved / ceiling,
        "share_429": rejected / max(1, accepted + rejected),
        "accepted": accepted,
        "minutes": minutes,
    }


@contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def pool_case(minutes: float, *, bad_key: bool) -> dict[str, Any]:
    limit = ("--rpm", str(RPM))
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock_server("--latency-ms", "20-200", *limit) as a,
        mock_server("--latency-ms", "20-200", *limit) as b,
    ):
        pool = Path(tmp) / "pool.toml"
        pool.write_text(
            "".join(
                f'[[endpoint]]\nname = "{name}"\nbase_url = "{m.url}/v1"\nkey_env = "{key}"\n'
                f'rpm = {RPM}\nmodels = ["bench-model"]\n\n'
                for name, m, key in (("a", a, "KEY_A"), ("b", b, "KEY_B"))
            )
        )
        env = {**os.environ, "KEY_A": "bad-key" if bad_key else "ka", "KEY_B": "kb"}
        env["BATCHER_STATE_DIR"] = f"{tmp}/state"
        jobs = write_jobs(Path(tmp) / "jobs.jsonl", int(2 * RPM * minutes))
        batcher(jobs, Path(tmp) / "out", "--pool", str(pool), env=env).wait()
        stats = [a.stats(), b.stats()]
        import pyarrow.parquet as pq

        rows = pq.read_table(Path(tmp) / "out" / "results").to_pylist()
    ceiling = RPM if bad_key else 2 * RPM
    result = measure([s for s in stats if s["accepted"]], ceiling)
    result["by_endpoint"] = {e: sum(r["endpoint"] == e for r in rows) for e in ("a", "b")}
    result["ok"] = sum(r["status"] == "ok" for r in rows)
    result["jobs"] = len(rows)
    return result


def two_runs_case(minutes: float, store: str) -> dict[str, Any]:
    ceiling = 2 * RPM
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock_server("--latency-ms", "20-200", "--rpm", str(ceiling)) as mock,
    ):
        env = {**os.environ, "BENCH_KEY": "k", "BATCHER_STATE_DIR": f"{tmp}/state"}
        flags = [
            "--base-url",
            f"{mock.url}/v1",
            "--api-key-env",
            "BENCH_KEY",
            "--rpm",
            str(ceiling),
        ]
        if store != "local":
            flags += ["--quota-store", store]
        n = int(ceiling * minutes / 2)
        procs = [
            batcher(
                write_jobs(Path(tmp) / f"{w}.jsonl", n, w), Path(tmp) / f"out-{w}", *flags, env=env
            )
            for w in ("a", "b")
        ]
        for p in procs:
            p.wait()
        stats = mock.stats()
        os.environ["BATCHER_STATE_DIR"] = f"{tmp}/state"
        counted = anyio.run(spent_today, None if store == "local" else store, time.time())
    result = measure([stats], ceiling)
    result["counted_rpd"] = sum(s.count for s in counted)
    return result


async def admissions(store: QuotaStore | None, n: int) -> float:
    clock = SystemClock()
    account = Account.of_key("http://bench", "k", "$K")
    quota = SharedQuota(store, account, "m", clock, "bench") if store is not None else None
    lane = Lane("m", Limits(rpd=10**9), clock, quota=quota)
    async with lane.request(1) as slot:  # the first answer opens the lane
        slot.done(1)
    t0 = time.perf_counter()
    for _ in range(n):
        async with lane.request(1) as slot:
            slot.done(1)
    rate = n / (time.perf_counter() - t0)
    if quota is not None:
        await quota.close()
    if store is not None:
        await store.aclose()
    return rate


def store_case() -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as url:
        for name, make in (
            ("none", lambda: None),
            ("memory", MemoryStore),
            ("sqlite", lambda: SqliteStore(Path(tmp) / "q.sqlite3")),
            ("redis", lambda: RedisStore(url)),
        ):
            out[name] = anyio.run(admissions, make(), 50_000, backend="asyncio")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--only")
    args = ap.parse_args()
    cases = {
        "pool-two-endpoints": lambda: pool_case(args.minutes, bad_key=False),
        "pool-bad-key": lambda: pool_case(args.minutes, bad_key=True),
        "two-runs-local": lambda: two_runs_case(args.minutes, "local"),
        "store-admissions": store_case,
    }
    if args.only is None or args.only == "two-runs-redis":
        cases["two-runs-redis"] = lambda: _with_redis(args.minutes)
    print(
        f"{'case':21} {'ceiling':>9} {'achieved':>9} {'efficiency':>10} {'429 share':>9}  what else"
    )
    for name, case in cases.items():
        if args.only and name != args.only:
            continue
        r = case()
        if name == "store-admissions":
            rates = ", ".join(f"{k} {v:,.0f}" for k, v in r.items())
            print(f"{name:21} admissions/s through a lane: {rates}", flush=True)
            continue
        if "by_endpoint" in r:
            extra = f"jobs by endpoint {r['by_endpoint']} ({r['ok']} ok of {r['jobs']})"
        else:
            extra = f"{r['counted_rpd']:,} counted for the day, {r['accepted']:,} accepted"
        ceiling = RPM if name == "pool-bad-key" else 2 * RPM
        print(
            f"{name:21} {ceiling:>9,} {r['achieved']:9,.0f} {r['efficiency']:10.3f}"
            f" {r['share_429']:9.2%}  {extra}",
            flush=True,
        )


def _with_redis(minutes: float) -> dict[str, Any]:
    with redis_server() as url:
        return two_runs_case(minutes, url)


if __name__ == "__main__":
    main()
