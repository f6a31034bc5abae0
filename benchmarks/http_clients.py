"""CPU per request of the bare client loops alone: aiohttp against batcher's HTTP/1.1 client, each
on the default asyncio loop and on uvloop, side by side in one run.

Each (client, loop) pair is ``bare_clients.py`` in its own process sending the same N jobs at
concurrency C to ``batcher mock-server`` (its own process, no limits, no latency), measured by
``os.wait4``. A run with a single job first gives each pair's start-up CPU, subtracted from the
figures; ``--repeat R`` interleaves the pairs R times and reports the median [min-max] and the
ratio to bare aiohttp on asyncio. uvloop is not a dependency: ``pip install uvloop`` first.

    python benchmarks/http_clients.py [--jobs 10000] [--concurrency 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

from _common import mock_server, run_child, write_jobs
from overhead import machine

HERE = Path(__file__).resolve().parent
PAIRS = [("aiohttp", False), ("aiohttp", True), ("http1", False), ("http1", True)]


def label(kind: str, uvloop: bool) -> str:
    return f"{kind} on {'uvloop' if uvloop else 'asyncio'}"


def cpu_of(kind: str, uvloop: bool, jobs: Path, url: str, concurrency: int, n: int) -> float:
    cmd = [sys.executable, str(HERE / "bare_clients.py"), kind, str(jobs), f"{url}/v1/"]
    cmd += [str(concurrency), *(["--uvloop"] if uvloop else [])]
    run = run_child(cmd, timeout=60 + n / 100)
    if run.returncode != 0 or run.stdout.strip() != str(n):
        raise SystemExit(f"{label(kind, uvloop)} failed ({run.returncode}): {run.stdout[-500:]}")
    return run.cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    host = machine()
    with tempfile.TemporaryDirectory() as tmp, mock_server() as mock:
        one = write_jobs(Path(tmp) / "one.jsonl", 1)
        jobs = write_jobs(Path(tmp) / "jobs.jsonl", args.jobs)
        start = {p: cpu_of(*p, one, mock.url, args.concurrency, 1) for p in PAIRS}
        samples: dict[tuple[str, bool], list[float]] = {p: [] for p in PAIRS}
        for _ in range(args.repeat):
            for p in PAIRS:
                cpu = cpu_of(*p, jobs, mock.url, args.concurrency, args.jobs)
                samples[p].append((cpu - start[p]) / args.jobs * 1e6)
    base = statistics.median(samples[PAIRS[0]])
    print(f"{started:%Y-%m-%d %H:%M} UTC, {host}")
    print(f"{args.jobs} jobs, concurrency {args.concurrency}, {args.repeat} interleaved repeats")
    print(f"{'client':<20} {'CPU us/req':>22} {'vs aiohttp/asyncio':>19}")
    for p in PAIRS:
        values = samples[p]
        med = statistics.median(values)
        spread = f"{med:.0f} [{min(values):.0f}-{max(values):.0f}]"
        print(f"{label(*p):<20} {spread:>22} {med / base:>18.2f}x")


if __name__ == "__main__":
    main()
