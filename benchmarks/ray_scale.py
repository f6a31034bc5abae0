"""A Ray cluster against one process at the same combined limits: achieved rate / ceiling.

The mock runs in its own process (20-200 ms latency) enforcing one RPM limit, as in
``throughput.py``; the same jobs are sent by ``batcher run`` in one process and by ``batcher run
--ray local`` (a single-node cluster on 127.0.0.1, one worker per CPU, all drawing on one budget),
side by side in one run. Figures are measured at the server: accepted requests per minute
between its first and last accepted request, over the ceiling; the cluster's start-up (Ray's
processes, the workers) is outside that span and reported apart, as the driver's wall time.
``schema`` sends with ``--schema jobs/tickets.schema.json`` (each worker checks and types every
answer); ``pool-of-two`` sends through a pool file of two endpoints, each its own mock process
enforcing half the limit (the rate is the two servers' rates summed).

``--scale`` shows how the rate scales with the cluster instead: 1, 2 and 4 workers (actors of
``batcher.ray.process``, on a local cluster of as many logical CPUs) through 1 and 2 endpoints
(each its own mock process enforcing its share of the ceiling), each as a ratio of the ceiling.

    python benchmarks/ray_scale.py [--minutes 1] [--only NAME]
    python benchmarks/ray_scale.py --scale [--minutes 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import mock_process, write_jobs

from batcher.ray import LOCAL_ENV


@dataclass(frozen=True)
class Case:
    name: str
    provider: str
    rpm: int
    mock_flags: tuple[str, ...] = ()
    run_flags: tuple[str, ...] = ()
    endpoints: int = 1


SCHEMA = str(Path(__file__).resolve().parents[1] / "jobs" / "tickets.schema.json")
CASES = [
    Case("openai-per-minute", "openai", 1200, ("--openai-per-minute",)),
    Case("rpm-minute-windows", "gemini", 1200),
    Case("schema", "openai", 1200, ("--openai-per-minute",), ("--schema", SCHEMA)),
    Case("pool-of-two", "openai", 1200, ("--openai-per-minute",), endpoints=2),
]


def run_once(case: Case, minutes: float, ray: bool) -> dict[str, float]:
    share = case.rpm // case.endpoints
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        urls = [
            stack.enter_context(
                mock_process("--latency-ms", "20-200", "--rpm", str(share), *case.mock_flags)
            )
            for _ in range(case.endpoints)
        ]
        jobs = write_jobs(Path(tmp) / "jobs.jsonl", int(case.rpm * minutes))
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "ray_bootstrap_config.yaml").write_text("{}\n")
        env = {**os.environ, **LOCAL_ENV, "HOME": str(home), "BENCH_KEY": "k"}
        if case.endpoints == 1:
            base = f"{urls[0]}/v1beta" if case.provider == "gemini" else f"{urls[0]}/v1"
            where: tuple[str, ...] = ("--provider", case.provider, "--base-url", base)
            where += ("--api-key-env", "BENCH_KEY", "--rpm", str(case.rpm))
        else:
            pool = Path(tmp) / "pool.toml"
            pool.write_text(
                "".join(
                    f'[[endpoint]]\nname = "e{i}"\nbase_url = "{url}/v1"\n'
                    f'key_env = "BENCH_KEY"\nrpm = {share}\nmodels = ["bench-model"]\n\n'
                    for i, url in enumerate(urls)
                )
            )
            where = ("--pool", str(pool))
        started = time.monotonic()
        subprocess.run(
            [
                *(sys.executable, "-m", "batcher", "run", str(jobs), "--out", f"{tmp}/out"),
                *where,
                *("--no-progress", "--max-concurrency", "32", *case.run_flags),
                *(("--ray", "local") if ray else ()),
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.monotonic() - started
        every = [httpx.get(f"{url}/admin/stats").json() for url in urls]
    achieved = span_min = 0.0
    accepted = rejected = 0
    for stats in every:
        span = (stats["last_accepted"] - stats["first_accepted"]) / 60
        achieved += (stats["accepted"] - 1) / span
        span_min = max(span_min, span)
        accepted, rejected = accepted + stats["accepted"], rejected + stats["rejected"]
    return {
        "achieved": achieved,
        "efficiency": achieved / case.rpm,
        "share_429": rejected / (accepted + rejected),
        "minutes": span_min,
        "wall": wall,
    }


SCALE_RPM = 1200
SCALE_CHILD = """
import json, sys
import ray.data
from batcher.ray import connect, process
workers, jobs, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
options = json.loads(sys.argv[4])
connect("local", num_cpus=workers)
rows = [json.loads(line) for line in open(jobs)]
ds = ray.data.from_items(rows, override_num_blocks=4 * workers)
process(ds, out, workers=workers, batch_size=128, **options).materialize()
"""


def scale_once(workers: int, endpoints: int, minutes: float) -> dict[str, float]:
    """``batcher.ray.process`` with ``workers`` actors through ``endpoints`` mock processes that
    together enforce ``SCALE_RPM``; the rate measured at the servers, as ``run_once``'s."""
    share = SCALE_RPM // endpoints
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        urls = [
            stack.enter_context(
                mock_process("--latency-ms", "20-200", "--rpm", str(share), "--openai-per-minute")
            )
            for _ in range(endpoints)
        ]
        jobs = write_jobs(Path(tmp) / "jobs.jsonl", int(SCALE_RPM * minutes))
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "ray_bootstrap_config.yaml").write_text("{}\n")
        env = {**os.environ, **LOCAL_ENV, "HOME": str(home), "BENCH_KEY": "k"}
        options: dict[str, object] = {"max_concurrency": 32}
        if endpoints == 1:
            options |= {"base_url": f"{urls[0]}/v1", "api_key_env": "BENCH_KEY"}
            options |= {"rpm": SCALE_RPM}
        else:
            pool = Path(tmp) / "pool.toml"
            pool.write_text(
                "".join(
                    f'[[endpoint]]\nname = "e{i}"\nbase_url = "{url}/v1"\n'
                    f'key_env = "BENCH_KEY"\nrpm = {share}\nmodels = ["bench-model"]\n\n'
                    for i, url in enumerate(urls)
                )
            )
            options |= {"pool_file": str(pool)}
        child = [sys.executable, "-c", SCALE_CHILD, str(workers), str(jobs), f"{tmp}/out"]
        subprocess.run(
            [*child, json.dumps(options)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        every = [httpx.get(f"{url}/admin/stats").json() for url in urls]
    achieved = 0.0
    accepted = rejected = 0
    for stats in every:
        span = (stats["last_accepted"] - stats["first_accepted"]) / 60
        achieved += (stats["accepted"] - 1) / span
        accepted, rejected = accepted + stats["accepted"], rejected + stats["rejected"]
    return {"achieved": achieved, "share_429": rejected / (accepted + rejected)}


def scale(minutes: float) -> None:
    print(f"{'workers':>7} {'endpoints':>9} {'ceiling':>10} {'achieved':>9} {'efficiency':>10}")
    for endpoints in (1, 2):
        for workers in (1, 2, 4):
            r = scale_once(workers, endpoints, minutes)
            print(
                f"{workers:7} {endpoints:9} {SCALE_RPM:>6,} RPM {r['achieved']:9,.0f}"
                f" {r['achieved'] / SCALE_RPM:10.3f}   429: {r['share_429']:.2%}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--only", choices=[c.name for c in CASES])
    ap.add_argument("--scale", action="store_true", help="1, 2, 4 workers; 1 and 2 endpoints")
    args = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    if args.scale:
        scale(args.minutes)
        return
    print(
        f"{'case':20} {'how':8} {'ceiling':>10} {'achieved':>9} {'efficiency':>10}"
        f" {'429 share':>9} {'minutes':>7} {'wall s':>7}"
    )
    for case in CASES:
        if args.only and case.name != args.only:
            continue
        results = {}
        for how in ("process", "ray"):
            r = results[how] = run_once(case, args.minutes, ray=how == "ray")
            print(
                f"{case.name:20} {how:8} {case.rpm:>6,} RPM {r['achieved']:9,.0f}"
                f" {r['efficiency']:10.3f} {r['share_429']:9.2%} {r['minutes']:7.2f}"
                f" {r['wall']:7.1f}",
                flush=True,
            )
        ratio = results["ray"]["achieved"] / results["process"]["achieved"]
        print(f"{case.name:20} ratio (ray / process) of the rate achieved: {ratio:.3f}")


if __name__ == "__main__":
    main()
