"""CPU time per request: ``batcher run`` against a bare httpx loop, side by side in one run.

Both send the same N jobs at the same concurrency to the mock provider (its own process, no
limits, no latency). batcher's figure includes reading the jobs, the journal and the Parquet output.

    python benchmarks/overhead.py [--jobs 20000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import child_cpu, mock_process, write_jobs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp, mock_process() as url:
        jobs = write_jobs(Path(tmp) / "jobs.jsonl", args.jobs)
        bare_cpu, bare_wall = child_cpu(
            [
                sys.executable,
                str(here / "bare_httpx.py"),
                str(jobs),
                f"{url}/v1/",
                str(args.concurrency),
            ]
        )
        out = Path(tmp) / "out"
        ours_cpu, ours_wall = child_cpu(
            [
                sys.executable,
                "-m",
                "batcher",
                "run",
                str(jobs),
                "--out",
                str(out),
                "--base-url",
                f"{url}/v1",
                "--api-key-env",
                "PATH",
                "--no-progress",
                "--max-concurrency",
                str(args.concurrency),
            ]
        )
        shutil.rmtree(out)
    n = args.jobs
    print(f"jobs={n} concurrency={args.concurrency}")
    print(f"{'':12} {'CPU ms/req':>10} {'wall s':>8} {'req/s':>8}")
    print(f"{'bare httpx':12} {bare_cpu / n * 1000:10.3f} {bare_wall:8.2f} {n / bare_wall:8.0f}")
    print(f"{'batcher':12} {ours_cpu / n * 1000:10.3f} {ours_wall:8.2f} {n / ours_wall:8.0f}")
    print(f"ratio (batcher / bare) CPU per request: {ours_cpu / bare_cpu:.2f}x")


if __name__ == "__main__":
    main()
