"""Throughput against a rate-limited mock provider: achieved rate / ceiling, and the 429 share.

The mock runs in its own process with 20-200 ms latency (the ``slow-*`` cases: 2-4 s and 10-30 s,
a real model's answer times) and enforces the limits the way each provider does: Gemini in
clock-minute windows; OpenAI per-minute limits quantized per second, rejections counted; an
OpenAI-compatible server enforcing over a sliding minute instead; and per clock 10 s (as Azure
OpenAI may). ``batcher run`` is given the
same limits and runs long enough for several windows, with no ``--max-concurrency`` (what a
user's run does) unless a case says. Figures are measured at the server: accepted requests (or
input tokens) per minute between the first and the last accepted request's admission by the
server's limits (before its latency), over the ceiling.

    python benchmarks/throughput.py [--minutes 2] [--only NAME]... [--bare]

``--bare`` adds, after each RPM case on the OpenAI wire, the same jobs sent by a bare paced loop
(``bare_clients.py http1 --rate``: the transport batcher sends over, each job leaving at its slot
at 0.99 of the limit, a late one at once, nothing else) against a fresh mock: what this machine
and the mock allow at that rate, beside what the lane reached, so the rest is the run's own loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import mock_process

ENGLISH = (
    "Rate limits are enforced per model and per minute, so a batch runner has to pace its "
    "requests evenly instead of sending them all at once and sleeping afterwards. "
)
CJK = "速率限制按模型和分钟执行，因此批处理程序必须均匀地安排请求，而不是一次全部发送。"


@dataclass(frozen=True)
class Case:
    name: str
    provider: str
    limit_flags: tuple[str, ...]
    binding: str  # "rpm" or "tpm"
    ceiling: int
    mixed_text: bool = False
    mock_flags: tuple[str, ...] = ()
    concurrency: int | None = None
    latency: str = "20-200"
    jobs: int | None = None  # a fixed number of jobs, else as many as --minutes needs


CASES = [
    Case("rpm-minute-windows", "gemini", ("--rpm", "1200"), "rpm", 1200),
    Case(
        "openai-per-minute",
        "openai",
        ("--rpm", "1200"),
        "rpm",
        1200,
        False,
        ("--openai-per-minute",),
    ),
    Case("rpm-per-second", "openai", ("--rpm", "1200"), "rpm", 1200),
    # the highest presets' rate (openai-tier5 small models): 500 a second, the per-second
    # quantum 500, up to 0.2 s latency, so about 100 in flight
    Case("rpm-per-second-30k", "openai", ("--rpm", "30000"), "rpm", 30000),
    Case("tpm-english-cjk", "gemini", ("--tpm", "60000", "--rpm", "100000"), "tpm", 60000, True),
    Case("tpm-per-second-cjk", "openai", ("--tpm", "60000", "--rpm", "100000"), "tpm", 60000, True),
    # TPM enforced per clock 10 s (as Azure may), 250 jobs: the first windows come before the
    # estimator has learned the tokenizer. The mock's counts English and Chinese at about 1.6x
    # chars/4 (1.07x batcher's starting rule); "-far" scales them by 1.6 more (1.7x the rule)
    Case(
        "tpm-10s-windows-cjk",
        "openai",
        ("--tpm", "60000", "--rpm", "100000"),
        "tpm",
        60000,
        True,
        ("--openai-window", "10"),
        jobs=250,
    ),
    Case(
        "tpm-10s-windows-far",
        "openai",
        ("--tpm", "60000", "--rpm", "100000"),
        "tpm",
        60000,
        True,
        ("--openai-window", "10", "--token-scale", "1.6"),
        jobs=250,
    ),
    # real answer times: a few hundred tokens (2-4 s), long generations (10-30 s)
    Case("slow-2-4s-1200", "openai", ("--rpm", "1200"), "rpm", 1200, latency="2000-4000"),
    Case("slow-10-30s-600", "openai", ("--rpm", "600"), "rpm", 600, latency="10000-30000"),
    Case("slow-10-30s-500", "gemini", ("--rpm", "500"), "rpm", 500, latency="10000-30000"),
    Case("slow-2-4s-30k", "openai", ("--rpm", "30000"), "rpm", 30000, latency="2000-4000"),
    # the same as a fixed 16 in flight (the old default) would run it
    Case(
        "slow-2-4s-1200-fixed16",
        "openai",
        ("--rpm", "1200"),
        "rpm",
        1200,
        latency="2000-4000",
        concurrency=16,
    ),
]


def write_jobs(path: Path, case: Case, minutes: float) -> int:
    rng = random.Random(7)
    n = int(case.ceiling * minutes) if case.binding == "rpm" else int(400 * minutes)
    n = case.jobs or n
    with path.open("w") as f:
        for i in range(n):
            if case.mixed_text:
                prompt = ENGLISH * rng.randint(1, 4) + CJK * rng.randint(0, 4)
            else:
                prompt = f"Job {i}: one sentence on pacing."
            f.write(json.dumps({"id": f"j{i}", "prompt": prompt, "model": "bench-model"}) + "\n")
    return n


def run_case(case: Case, minutes: float, *, bare: bool = False) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock_process("--latency-ms", case.latency, *case.limit_flags, *case.mock_flags) as url,
    ):
        jobs = Path(tmp) / "jobs.jsonl"
        n = write_jobs(jobs, case, minutes)
        base = f"{url}/v1beta" if case.provider == "gemini" else f"{url}/v1"
        env = {**os.environ, "BENCH_KEY": "k"}
        if bare:
            rate = case.ceiling * 0.99 / 60
            command = [
                *(sys.executable, str(Path(__file__).with_name("bare_clients.py"))),
                *("http1", str(jobs), base, str(max(16, int(rate * 0.5))), "--rate", str(rate)),
            ]
        else:
            command = [
                *(sys.executable, "-m", "batcher", "run", str(jobs), "--out", f"{tmp}/out"),
                *("--provider", case.provider, "--base-url", base, "--api-key-env", "BENCH_KEY"),
                "--no-progress",
                *(("--max-concurrency", str(case.concurrency)) if case.concurrency else ()),
                *case.limit_flags,
            ]
        subprocess.run(command, check=False, env=env, stdout=subprocess.DEVNULL)
        stats = httpx.get(f"{url}/admin/stats").json()
    # the rate the server's limits admitted (answer times, up to 30 s, would blur the span)
    span_min = (stats["last_admitted"] - stats["first_admitted"]) / 60
    accepted, rejected = stats["accepted"], stats["rejected"]
    if case.binding == "rpm":
        achieved = (accepted - 1) / span_min
    else:
        achieved = stats["input_tokens"] * (accepted - 1) / accepted / span_min
    return {
        "jobs": n,
        "accepted": accepted,
        "rejected": rejected,
        "minutes": span_min,
        "achieved": achieved,
        "efficiency": achieved / case.ceiling,
        "share_429": rejected / (accepted + rejected),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--only", choices=[c.name for c in CASES], action="append")
    ap.add_argument("--bare", action="store_true", help="a bare paced loop after each RPM case")
    args = ap.parse_args()
    print(
        f"{'case':22} {'ceiling':>14} {'achieved':>10} {'efficiency':>10} {'429 share':>9}"
        f" {'jobs':>6} {'minutes':>7}"
    )
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        ceiling = f"{case.ceiling:,} {case.binding.upper()}"
        bare = args.bare and case.binding == "rpm" and case.provider == "openai"
        for name, r in (
            (case.name, run_case(case, args.minutes)),
            *(((" bare loop", run_case(case, args.minutes, bare=True)),) if bare else ()),
        ):
            print(
                f"{name:22} {ceiling:>14} {r['achieved']:10,.0f} {r['efficiency']:10.3f}"
                f" {r['share_429']:9.2%} {r['jobs']:6} {r['minutes']:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
