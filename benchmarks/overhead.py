"""CPU per request of ``batcher run`` against bare client loops, side by side in one run.

Every client sends the same N jobs (the same JSON chat body) at the same concurrency to the mock
provider, ``batcher mock-server`` in its own process on a loopback port (no limits, no latency):

  bare aiohttp    one ``aiohttp.ClientSession``, ``TCPConnector(limit=C)``
  bare httpx      ``httpx.AsyncClient``, its default transport, limits C/C
  httpx+aiohttp   ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport`` (limits C/C)
  bare http1      batcher's own HTTP/1.1 client (``batcher/_wire/http1.py``), what a run sends over
  batcher         ``batcher run JOBS --max-concurrency C --no-progress`` into a fresh ``--out``

The bare loops are ``bare_clients.py``. Each client runs in its own process and is measured by
``os.wait4`` (its own CPU, not the mock's): CPU per request (and the kernel's share of it), wall
time, requests per second. batcher's figure includes reading and checking the jobs, the lanes,
the journal and the Parquet output. ``--repeat R`` runs the clients R times, interleaved, and
reports the median [min-max]; the ratios are of runs side by side.

Before that, each client runs once with a single job: its start-up cost (interpreter, imports,
for batcher the run's setup and its Parquet output), and a warm-up. ``sustained`` is the rate
once started: N requests over the wall time less that single job's (start-up and finish). The
mock's CPU per request and the share of a CPU it was busy show whether it, not the client, was
the bottleneck; its counters confirm each client had exactly N answers of 200.

    python benchmarks/overhead.py [--jobs 20000] [--concurrency 32] [--repeat 1]
                                  [--clients aiohttp,httpx,httpx-aiohttp,http1,batcher]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _common import ChildRun, Mock, mock_server, run_child, write_jobs

HERE = Path(__file__).resolve().parent
KEY_ENV = "BATCHER_BENCH_KEY"


@dataclass(frozen=True)
class Client:
    label: str
    kind: str  # bare_clients.py's name for it, or "batcher"


CLIENTS = [
    Client("bare aiohttp", "aiohttp"),
    Client("bare httpx", "httpx"),
    Client("httpx+aiohttp", "httpx-aiohttp"),
    Client("bare http1", "http1"),
    Client("batcher", "batcher"),
]
BASELINE = "bare aiohttp"


@dataclass(frozen=True)
class Sample:
    """One run of one client."""

    cpu: float  # the client process's user + system seconds
    system: float  # of which system (kernel) seconds
    wall: float
    mock_cpu: float  # the mock server's CPU seconds meanwhile


def command(client: Client, jobs: Path, url: str, concurrency: int, out: Path) -> list[str]:
    if client.kind == "batcher":
        return [
            *(sys.executable, "-m", "batcher", "run", str(jobs), "--out", str(out)),
            *("--base-url", f"{url}/v1", "--api-key-env", KEY_ENV, "--no-progress"),
            *("--max-concurrency", str(concurrency)),
        ]
    return [
        *(sys.executable, str(HERE / "bare_clients.py"), client.kind, str(jobs)),
        *(f"{url}/v1/", str(concurrency)),
    ]


def measure(client: Client, mock: Mock, jobs: Path, n: int, concurrency: int, tmp: Path) -> Sample:
    """Run ``client`` over ``jobs`` (``n`` of them) once; check the mock answered each one 200."""
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    before, mock_cpu = mock.stats(), mock.cpu()
    run: ChildRun = run_child(
        command(client, jobs, mock.url, concurrency, out),
        timeout=60 + n / 100,  # bounded: 100 requests a second at the very least
        env={**os.environ, KEY_ENV: "k"},
    )
    mock_cpu = mock.cpu() - mock_cpu
    after = mock.stats()
    shutil.rmtree(out, ignore_errors=True)
    if run.returncode != 0:
        raise SystemExit(f"{client.label} exited {run.returncode}: {run.stdout[-500:]}")
    sent = after["requests"] - before["requests"]
    ok = after["accepted"] - before["accepted"]
    if sent != n or ok != n:
        raise SystemExit(
            f"{client.label}: the mock saw {sent} requests, {ok} answered 200, not {n}"
        )
    return Sample(run.cpu, run.system, run.wall, mock_cpu)


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0))
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{cpus} CPUs ({model}), Python {platform.python_version()}, load average {load}"


def spread(values: list[float], fmt: str) -> str:
    """``median [min-max]``, or just the value when there is one."""
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} [{min(values):{fmt}}-{max(values):{fmt}}]"


def available(client: Client) -> bool:
    if client.kind != "httpx-aiohttp":
        return True
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        print("httpx-aiohttp is not installed (pip install -e '.[dev]'): skipping httpx+aiohttp")
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each client, interleaved")
    ap.add_argument(
        "--clients",
        default=",".join(cl.kind for cl in CLIENTS),
        help="which clients, by kind (aiohttp, the baseline, always runs)",
    )
    args = ap.parse_args()
    n, c = args.jobs, args.concurrency
    kinds = {*args.clients.split(","), "aiohttp"}
    clients = [cl for cl in CLIENTS if cl.kind in kinds and available(cl)]
    started = datetime.datetime.now(datetime.UTC)
    host = machine()
    start_cpu: dict[str, float] = {}
    start_wall: dict[str, float] = {}
    samples: dict[str, list[Sample]] = {cl.label: [] for cl in clients}
    with tempfile.TemporaryDirectory() as name, mock_server() as mock:
        tmp = Path(name)
        one = write_jobs(tmp / "one.jsonl", 1)
        jobs = write_jobs(tmp / "jobs.jsonl", n)
        for cl in clients:  # start-up cost, and a warm-up
            first = measure(cl, mock, one, 1, c, tmp)
            start_cpu[cl.label], start_wall[cl.label] = first.cpu, first.wall
        for r in range(args.repeat):
            for cl in clients if r % 2 == 0 else clients[::-1]:
                samples[cl.label].append(measure(cl, mock, jobs, n, c, tmp))
                s = samples[cl.label][-1]
                print(
                    f"  run {r + 1}/{args.repeat} {cl.label:14} CPU {s.cpu:7.2f} s"
                    f"  wall {s.wall:7.2f} s  mock CPU {s.mock_cpu:6.2f} s",
                    file=sys.stderr,
                )

    print("python benchmarks/overhead.py " + " ".join(sys.argv[1:]))
    print(f"{started:%Y-%m-%d %H:%M} UTC, {host}")
    spread_note = " (median [min-max])" if args.repeat > 1 else ""
    print(f"jobs={n} concurrency={c} repeat={args.repeat}{spread_note}")
    head = ["", "CPU us/req", "sys", "wall s", "req/s", "sustained", "start CPU s"]
    head += ["mock CPU us/req", "mock busy"]
    rows = [head]
    for cl in clients:
        ss = samples[cl.label]
        rows.append(
            [
                cl.label,
                spread([s.cpu / n * 1e6 for s in ss], ".0f"),
                f"{statistics.median(s.system / s.cpu for s in ss):.0%}",
                spread([s.wall for s in ss], ".2f"),
                spread([n / s.wall for s in ss], ".0f"),
                spread([n / max(1e-9, s.wall - start_wall[cl.label]) for s in ss], ".0f"),
                f"{start_cpu[cl.label]:.2f}",
                spread([s.mock_cpu / n * 1e6 for s in ss], ".0f"),
                spread([s.mock_cpu / s.wall * 100 for s in ss], ".0f") + "%",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))

    base = samples[BASELINE]
    for cl in clients:
        if cl.label == BASELINE:
            continue
        ratios = [o.cpu / b.cpu for o, b in zip(samples[cl.label], base, strict=True)]
        line = f"ratio ({cl.label} / {BASELINE}) CPU per request: {spread(ratios, '.2f')}x"
        # Without each one's start-up cost, once the requests outweigh it (a long run's ratio).
        if all(b.cpu > 2 * start_cpu[BASELINE] for b in base):
            net = [
                (o.cpu - start_cpu[cl.label]) / (b.cpu - start_cpu[BASELINE])
                for o, b in zip(samples[cl.label], base, strict=True)
            ]
            line += f"  (less start-up: {spread(net, '.2f')}x)"
        print(line)
    # The mock is not the bottleneck if it had CPU to spare while the fastest client ran.
    fastest = min(clients, key=lambda cl: statistics.median(s.wall for s in samples[cl.label]))
    fs = samples[fastest.label]
    busy = statistics.median(s.mock_cpu / s.wall for s in fs)
    per_cpu = n / statistics.median(s.mock_cpu for s in fs)
    print(
        f"mock: {busy:.0%} of a CPU busy at the fastest client ({fastest.label},"
        f" {statistics.median(n / s.wall for s in fs):,.0f} req/s);"
        f" it answers {per_cpu:,.0f} requests per CPU second"
    )


if __name__ == "__main__":
    main()
