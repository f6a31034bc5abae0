"""Which transport a run's POSTs go over, chosen by measurement: each candidate through the
hostile-server cases, then bare loops of POSTs against the fast loopback mock, then a whole
``batcher run`` against bare aiohttp, all in one run of this script.

Candidates (``bare_clients.py``'s kinds; each takes the caps and timeouts of batcher's own):

  http1            batcher's lean HTTP/1.1 client with its own parser (what runs ship)
  http1-httptools  the same client, its parser replaced by llhttp (``httptools_parser.py``)
  aiohttp-batcher  aiohttp as batcher drives it (``AiohttpTransport``: caps, deadline, proxies,
                   happy eyeballs), what carries the batch APIs' calls
  pyreqwest        Rust's reqwest through ``pyreqwest`` (proxies, HTTP/2 and TLS of its own)
  curl_cffi        libcurl through ``curl_cffi``'s ``AsyncSession``

Hostile cases: those of ``tests/test_hostile.py`` (its server and its answers: a content-length
of 5,000 digits, bodies over each cap by content-length, chunks, until close and once
inflated, a 65 MiB gzip bomb, a trickle past the request deadline, heads over their cap for the
lean parsers, as the tests apply them), and hostile framing from its property's pieces (a
negative or hex-overflowing size, a bad status line, a body cut short, a gzip body cut short, a
close before any answer, CL with TE, a NUL in a header). A case passes when the POST ends in the
client's own clean error within 10 s (``RetryableError`` for batcher's; the library's own
exception, or the adapter's cap, for the others), or, where the answer is valid HTTP (CL with
TE, a NUL in a value), in that answer. Each case runs in a process of its own, so a crash
or a hang fails it, not the benchmark.

Speed: each candidate and bare aiohttp (the baseline) in its own process sending the same N
POSTs at concurrency C (``overhead.py``'s measure: CPU by ``os.wait4``, the mock checked to have
answered each 200), start-up measured with one job, ``--repeat`` interleaved. Then ``batcher
run`` on the shipped transport against bare aiohttp, with the ceiling's bounds: at least 0.6x
its requests per second and at most 1.7x its CPU per request.

    pip install httptools pyreqwest curl_cffi   # the candidates; none is a dependency
    python benchmarks/transports.py [--jobs 20000] [--concurrency 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from _common import mock_server, write_jobs
from overhead import Client, Sample, machine, measure, spread

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CANDIDATES = ["http1", "http1-httptools", "aiohttp-batcher", "pyreqwest", "curl_cffi"]
LEAN = {"http1", "http1-httptools"}  # the parsers the head cases are for (as in the tests)
GUARD = 10.0  # a case not ended by then hangs: it fails


def _cases() -> list[tuple[str, Callable[[], Any], dict[str, float], str]]:
    """(id, answer, caps, expected) for each hostile case; expected is ``error`` (a clean error)
    or ``any`` (a clean error, or the valid answer)."""
    sys.path.insert(0, str(ROOT))
    from tests import test_hostile as t

    def params(test: Any) -> list[Any]:
        [mark] = [m for m in test.pytestmark if m.name == "parametrize"]
        return list(mark.args[1])

    cases: list[tuple[str, Callable[[], Any], dict[str, float], str]] = []
    wire = b"HTTP/1.1 200 OK\r\ncontent-length: " + t.DIGITS + b"\r\n\r\n{}"
    cases.append(("cl-5000-digits", lambda: t._sends(wire), {}, "error"))
    for p in params(t.test_each_body_cap_is_a_retryable_error_naming_it):
        w, caps, _ = p.values
        cases.append((f"cap-{p.id}", lambda w=w: t._sends(w), caps, "error"))
    for p in params(t.test_a_head_over_its_cap_is_a_retryable_error_naming_it):
        w, caps, _ = p.values
        cases.append((f"lean:cap-{p.id}", lambda w=w: t._sends(w), caps, "error"))
    bomb = gzip.compress(b"\0" * (65 << 20), compresslevel=1)
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb)
    cases.append(("gzip-bomb-65MiB", lambda: t._sends(head + bomb), {}, "error"))
    trickle = {"timeout": 0.3, "deadline": 0.8}
    cases.append(("trickle-past-deadline", lambda: t._trickle(0.05), trickle, "error"))
    ok = b"HTTP/1.1 200 OK\r\n"
    cut = gzip.compress(b'{"a": 1}')[:7]
    framing = {
        "negative-cl": (ok + b"content-length: -1\r\n\r\n{}", "error"),
        "chunk-size-overflow": (
            ok + b"transfer-encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}",
            "error",
        ),
        "bad-status-line": (b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}", "error"),
        "body-cut-short": (ok + b"content-length: 100\r\n\r\n{}", "error"),
        "gzip-cut-short": (
            ok + b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n%b" % (len(cut), cut),
            "error",
        ),
        "closed-unanswered": (b"", "error"),
        "cl-with-te": (
            ok + b"content-length: 50\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "any",
        ),
        "nul-in-header": (ok + b"x-a: \x00\xff\r\ncontent-length: 2\r\n\r\n{}", "any"),
    }
    for name, (w, expected) in framing.items():
        cases.append((name, lambda w=w: t._sends(w), {}, expected))
    return cases


def _clean(kind: str) -> tuple[type[BaseException], ...]:
    """The errors a candidate ends a request in when it ends it well."""
    from bare_clients import CapExceeded

    if kind in ("http1", "http1-httptools", "aiohttp-batcher"):
        from batcher._core.errors import RetryableError

        return (RetryableError,)
    if kind == "pyreqwest":
        from pyreqwest.exceptions import PyreqwestError

        return (PyreqwestError, CapExceeded)
    from curl_cffi.requests.exceptions import RequestException

    return (RequestException, CapExceeded)


async def _hostile_case(kind: str, case: str) -> str:
    """One case against ``kind``: ``pass`` or ``FAIL: what happened``."""
    from bare_clients import make_client

    sys.path.insert(0, str(ROOT))
    from tests.test_hostile import _hostile

    clean = _clean(kind)
    [(_, answer, caps, expected)] = [c for c in _cases() if c[0] == case]
    async with _hostile(answer()) as url, AsyncExitStack() as stack:
        send: Callable[[bytes], Awaitable[tuple[int, bytes]]] = await make_client(
            kind, stack, url.rstrip("/") + "/", 1, **caps
        )
        try:
            async with asyncio.timeout(GUARD):
                status, _ = await send(b"{}")
            return "pass" if expected == "any" else f"FAIL: answered {status}"
        except TimeoutError:
            return f"FAIL: not ended within {GUARD:g} s"
        except clean:
            return "pass"
        except Exception as e:
            return f"FAIL: {type(e).__name__}: {str(e)[:80]}"


def hostile(kind: str) -> dict[str, str]:
    """The hostile cases of ``kind``, each in a process of its own: a crash, or a hang the
    client's own loop cannot be woken from, fails that case, not the benchmark."""
    results: dict[str, str] = {}
    for case, *_ in _cases():
        if case.startswith("lean:") and kind not in LEAN:
            continue
        cmd = [sys.executable, str(HERE / "transports.py"), "--hostile-of", kind, "--case", case]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * GUARD, env=env)
        except subprocess.TimeoutExpired:
            results[case] = f"FAIL: hung past {3 * GUARD:g} s (its loop did not wake)"
            continue
        lines = proc.stdout.strip().splitlines()
        said = json.loads(lines[-1]) if lines else "nothing"
        if proc.returncode != 0:  # pyreqwest's "PyGILState_Release" abort at exit, say
            why = proc.stderr.strip().splitlines()[:1] or [""]
            results[case] = f"FAIL: {said}, then exited {proc.returncode} ({why[0][:70]})"
        else:
            results[case] = said
        print(f"  hostile {kind} {case}: {results[case]}", file=sys.stderr, flush=True)
    return results


def _installed(kind: str) -> bool:
    """Whether a candidate's library is here (``pip install httptools pyreqwest curl_cffi``:
    none is a dependency of batcher)."""
    import importlib.util

    module = {"http1-httptools": "httptools", "pyreqwest": "pyreqwest", "curl_cffi": "curl_cffi"}
    name = module.get(kind)
    if name is None or importlib.util.find_spec(name) is not None:
        return True
    print(f"{name} is not installed: skipping {kind}", file=sys.stderr)
    return False


LABELS = {
    "aiohttp": "bare aiohttp",
    "http1": "lean (our parser)",
    "http1-httptools": "lean (httptools)",
    "aiohttp-batcher": "aiohttp (batcher's)",
    "pyreqwest": "pyreqwest",
    "curl_cffi": "curl_cffi",
    "batcher": "batcher run",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--hostile-of", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hostile_of:
        print(json.dumps(asyncio.run(_hostile_case(args.hostile_of, args.case))))
        return
    kinds = [k for k in args.candidates.split(",") if _installed(k)]
    started = datetime.datetime.now(datetime.UTC)
    host = machine()
    verdicts = {kind: hostile(kind) for kind in kinds}

    n, c = args.jobs, args.concurrency
    clients = [Client(LABELS[k], k) for k in ["aiohttp", *kinds, "batcher"]]
    start: dict[str, Sample] = {}
    samples: dict[str, list[Sample]] = {cl.kind: [] for cl in clients}
    with tempfile.TemporaryDirectory() as name, mock_server() as mock:
        tmp = Path(name)
        one = write_jobs(tmp / "one.jsonl", 1)
        jobs = write_jobs(tmp / "jobs.jsonl", n)
        for cl in clients:
            start[cl.kind] = measure(cl, mock, one, 1, c, tmp)
        for r in range(args.repeat):
            for cl in clients if r % 2 == 0 else clients[::-1]:
                s = measure(cl, mock, jobs, n, c, tmp)
                samples[cl.kind].append(s)
                print(f"  run {r + 1} {cl.label:20} CPU {s.cpu:6.2f} s wall {s.wall:6.2f} s",
                      file=sys.stderr)  # fmt: skip

    def per_request(kind: str) -> list[float]:  # CPU us a request, start-up taken off
        return [(s.cpu - start[kind].cpu) / n * 1e6 for s in samples[kind]]

    def rate(kind: str) -> list[float]:  # requests a second once started
        return [n / max(1e-9, s.wall - start[kind].wall) for s in samples[kind]]

    base_cpu = statistics.median(per_request("aiohttp"))
    base_rate = statistics.median(rate("aiohttp"))
    print("python benchmarks/transports.py " + " ".join(sys.argv[1:]))
    print(f"{started:%Y-%m-%d %H:%M} UTC, {host}")
    print(f"{n} POSTs at concurrency {c}, {args.repeat} interleaved repeats (median [min-max])")
    rows = [["client", "hostile cases", "CPU us/req", "vs aiohttp", "req/s", "vs aiohttp"]]
    for cl in clients:
        cpu, rates = per_request(cl.kind), rate(cl.kind)
        if cl.kind in verdicts:
            v = verdicts[cl.kind]
            passed = sum(x == "pass" for x in v.values())
            hostile_cell = f"{passed}/{len(v)}" + (" pass" if passed == len(v) else " FAIL")
        else:
            hostile_cell = "-"
        rows.append(
            [
                cl.label,
                hostile_cell,
                spread(cpu, ".0f"),
                f"{statistics.median(cpu) / base_cpu:.2f}x",
                spread(rates, ".0f"),
                f"{statistics.median(rates) / base_rate:.2f}x",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [v.rjust(w) for v, w in zip(row[2:], widths[2:], strict=True)]
        print("  ".join(cells))
    for kind in kinds:
        failed = {k: v for k, v in verdicts[kind].items() if v != "pass"}
        if failed:
            print(f"{LABELS[kind]} failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    passing = [k for k in kinds if all(v == "pass" for v in verdicts[k].values())]
    if passing:
        best = min(passing, key=lambda k: statistics.median(per_request(k)))
        print(f"fastest among those passing every hostile case: {LABELS[best]}")
    cpu_ratio = statistics.median(per_request("batcher")) / base_cpu
    rate_ratio = statistics.median(rate("batcher")) / base_rate
    holds = rate_ratio >= 0.6 and cpu_ratio <= 1.7
    print(
        f"batcher run / bare aiohttp: {rate_ratio:.2f}x the requests a second (>= 0.6x), "
        f"{cpu_ratio:.2f}x the CPU a request (<= 1.7x): {'holds' if holds else 'DOES NOT HOLD'}"
    )


if __name__ == "__main__":
    main()
