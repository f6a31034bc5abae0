"""``batcher bench``: drive a synthetic load at a tier's ceiling and measure what it really gives.

The load runs through the same ``Runner`` as ``batcher run``; a recording transport notes when
each request left, when it was answered and with what status, and the figures come from that.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from .._config.limits import Limits, LimitTable
from .._config.quota_options import LimitOptions
from .._core.errors import UsageError, WriteFailed
from .._engine.runner import Runner, RunOptions
from .._jobs import Job
from .exits import EXIT_OK
from .flags import group_from_args

__all__ = ["BenchResult", "bench_command", "run_bench"]

_TEXT = (
    "pacing requests evenly keeps a batch under its limits while the queue drains at the rate "
    "the account allows"
)
_WORDS = _TEXT.split(" ")


@dataclass(frozen=True, slots=True)
class Sample:
    sent: float
    done: float
    status: int


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What a bench run achieved against its model's limits."""

    model: str
    limits: Limits
    seconds: float
    samples: tuple[Sample, ...]
    input_tokens: int
    peak_in_flight: int = 0
    """The most requests that were in flight at once."""
    inputs: int | None = None
    """Inputs embedded (``--endpoint embeddings``: many to a request); None for chat."""

    def lines(self, where: str) -> list[str]:
        """The report ``batcher bench`` prints; ``where`` names the endpoint measured."""
        lim = self.limits
        rpm_share = f" ({self.rpm / lim.rpm:.1%} of the ceiling)" if lim.rpm else ""
        tpm_share = f" ({self.tpm / lim.tpm:.1%} of the ceiling)" if lim.tpm else ""
        return [
            f"{self.model} on {where}, {self.seconds:.0f} s, limits {lim.describe()}",
            f"  achieved: {self.rpm:,.0f} RPM{rpm_share}, {self.tpm:,.0f} input TPM{tpm_share}",
            f"  answered 429: {self.share_429:.2%} of {len(self.samples):,} requests",
            f"  latency ms: p50 {self.latency_ms(0.5):.0f}, p90 {self.latency_ms(0.9):.0f},"
            f" p99 {self.latency_ms(0.99):.0f}",
            f"  in flight: up to {self.peak_in_flight:,} at once{self._needed()}",
            *self._inputs(),
        ]

    def _inputs(self) -> list[str]:
        """Embeddings: the inputs per minute, the figure that counts when many go in a request."""
        if self.inputs is None:
            return []
        each = self.inputs / max(1, self.ok)
        per_minute = self.inputs / self.seconds * 60
        return [f"  inputs: {per_minute:,.0f} per minute, {each:,.1f} to a request on average"]

    def _needed(self) -> str:
        """How many in flight the ceiling needs with these answer times (Little's law)."""
        lat = [s.done - s.sent for s in self.samples if s.status == 200]
        if not self.limits.rpm or not lat:
            return ""
        needed = self.limits.rpm / 60 * statistics.fmean(lat)
        return f"; the ceiling needs about {needed:,.0f} with these answer times"

    @property
    def ok(self) -> int:
        return sum(1 for s in self.samples if s.status == 200)

    @property
    def share_429(self) -> float:
        return sum(1 for s in self.samples if s.status == 429) / max(1, len(self.samples))

    @property
    def rpm(self) -> float:
        return self.ok / self.seconds * 60

    @property
    def tpm(self) -> float:
        return self.input_tokens / self.seconds * 60

    def latency_ms(self, q: float) -> float:
        lat = sorted((s.done - s.sent) * 1000 for s in self.samples if s.status == 200)
        if not lat:
            return float("nan")
        if len(lat) == 1:
            return lat[0]
        return statistics.quantiles(lat, n=100, method="inclusive")[round(q * 100) - 1]

    def per_second(self) -> list[tuple[int, int]]:
        """(second from the start, requests answered 200 that left in it)."""
        start = min((s.sent for s in self.samples), default=0.0)
        counts: dict[int, int] = {}
        for s in self.samples:
            if s.status == 200:
                k = int(s.sent - start)
                counts[k] = counts.get(k, 0) + 1
        return sorted(counts.items())


class _Recording(httpx.AsyncBaseTransport):
    """Passes requests on and notes each one's timing and status."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.samples: list[Sample] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = anyio.current_time()
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.samples.append(Sample(sent, anyio.current_time(), response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _jobs(model: str, count: int) -> Iterator[Job]:
    for i in range(count):
        words = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(12 + i % 24))
        yield Job.from_prompt(f"bench-{i}", f"Request {i}: {words}", model=model)


def _count(limits: Limits, seconds: float, embeds: bool) -> int:
    """Jobs enough to keep the load at the ceiling for ``seconds``: the RPM's worth, or for
    embeddings as many inputs as the TPM (or the RPM's full requests) lets through."""
    rpm = limits.rpm or 6000
    if not embeds:
        return int(rpm * seconds / 60 * 1.5) + 64
    per_minute = rpm * 100 if not limits.tpm else min(rpm * 2048, limits.tpm // 10)
    return int(per_minute * seconds / 60 * 1.5) + 256


def pyplot() -> Any:
    """``matplotlib.pyplot``, drawing off screen; ``UsageError`` if matplotlib is not installed
    (``batcher bench --plot`` asks before it sends anything)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'batcher[plot]'") from None
    return plt


def plot(result: BenchResult, path: str) -> None:
    """Requests per second over time against the limit, as a PNG (needs matplotlib)."""
    plt = pyplot()
    xs, ys = zip(*result.per_second(), strict=True) if result.samples else ((), ())
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.step(xs, ys, where="post", label="requests answered 200, by second sent")
    if result.limits.rpm:
        ax.axhline(
            result.limits.rpm / 60,
            color="red",
            linestyle="--",
            label=f"limit {result.limits.rpm:,} RPM",
        )
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests per second")
    ax.set_title(f"batcher bench: {result.model}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def run_bench(
    *, limits: LimitTable, model: str, seconds: float, options: dict[str, Any]
) -> BenchResult:
    """Run a synthetic load for ``seconds`` through a ``Runner`` and measure it."""
    model_limits = limits.for_model(model)
    embeds = options.get("api") == "embeddings"
    count = _count(model_limits, seconds, embeds)
    recorder = _Recording(httpx.AsyncHTTPTransport())
    opts = RunOptions(model=model, **options)
    with tempfile.TemporaryDirectory() as out:
        async with Runner(list(_jobs(model, count)), out, opts, transport=recorder) as runner:
            start = anyio.current_time()
            with anyio.move_on_after(seconds):
                await runner.run()
            elapsed = anyio.current_time() - start
            stats = runner.statistics()
            peak = runner.peak_in_flight()
    samples = tuple(recorder.samples)
    inputs = stats.ok if embeds else None
    return BenchResult(model, model_limits, elapsed, samples, stats.input_tokens, peak, inputs)


def bench_command(args: argparse.Namespace) -> int:
    """Drive the load the flags ask for and print what it achieved (and plot it, if asked)."""
    if not 0 < args.seconds < math.inf:
        raise UsageError("--seconds must be a positive number")
    if args.plot:
        pyplot()  # matplotlib missing: say so before the bench, not after it
    limits = group_from_args(LimitOptions, args).table()
    assert limits.tier is not None
    model = args.model or next(iter(limits.tier.models))
    options: dict[str, object] = {
        "provider": limits.tier.provider,
        "tier": args.tier,
        "api_key_env": args.api_key_env,
        "max_concurrency": args.max_concurrency,
        "base_url": args.base_url,
        "api": args.api,
        "dimensions": args.dimensions,
    }
    if args.base_url is None:
        from ..mock import MockConfig

        options["mock"] = MockConfig(latency_ms=(20.0, 200.0), limits=limits)
        if args.api == "embeddings" and args.dimensions is None:
            options["dimensions"] = 8  # the mock's vectors short: the bench measures the rate
    result = anyio.run(
        lambda: run_bench(limits=limits, model=model, seconds=args.seconds, options=options),
        backend="asyncio",
    )
    where = "the mock provider" if args.base_url is None else args.base_url
    print("\n".join(result.lines(where)))
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as e:
            raise WriteFailed.from_os_error(e, Path(args.plot)) from None
        print(f"  plot: {args.plot}")
    return EXIT_OK
