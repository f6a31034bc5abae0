"""The ``batcher`` command: parse arguments, call the library, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

# The codes a command chooses here; those of a finished run (0, 1, 3, 130, 143) are
# RunSummary.exit_code.
EXIT_OK, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 2, 4, 130
_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batcher",
        description="Push large sets of LLM prompts through rate-limited APIs, never losing work.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run job files into an output directory")
    r.add_argument("jobs", nargs="+", metavar="JOBS", help=".jsonl, .jsonl.gz or .parquet files")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (results/ inside)")
    r.add_argument(
        "--provider",
        choices=["openai", "gemini"],
        default="openai",
        help="wire format: OpenAI chat/completions (default) or Gemini generateContent",
    )
    r.add_argument(
        "--base-url", metavar="URL", help="API base URL (default: the provider's public URL)"
    )
    r.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the key (default: OPENAI_API_KEY, or "
        "GEMINI_API_KEY then GOOGLE_API_KEY)",
    )
    r.add_argument("--model", metavar="NAME", help="model for jobs that do not name their own")
    r.add_argument(
        "--max-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="requests in flight at most (default 16)",
    )
    r.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        metavar="N",
        help="attempts per job for retryable errors (default 5)",
    )
    r.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="timeout of one request (default 120)",
    )
    _column_flags(r)
    r.add_argument(
        "--mock",
        nargs="?",
        const="default",
        metavar="PRESET",
        help="run against the embedded mock provider (presets: default, instant, "
        "realistic, faulty, or a tier name to enforce its limits); no key needed",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress display or lines")
    _limit_flags(r)
    r.add_argument("--limits", metavar="FILE", help="TOML file of limits per model")
    r.add_argument(
        "--retry-errors",
        action="store_true",
        help="send jobs that ended in error again (their rows are replaced)",
    )
    r.add_argument(
        "--redo-changed",
        action="store_true",
        help="send finished jobs whose request changed since again",
    )
    r.add_argument(
        "--on-daily-limit",
        choices=["wait", "exit"],
        default="wait",
        help="when a model's daily quota is spent: wait for the reset (default) or "
        "stop with exit 3",
    )
    r.add_argument(
        "--quota-day",
        choices=["pacific", "rolling"],
        default="pacific",
        help="count RPD per day ending at midnight Pacific (default) or over 24 h",
    )

    sub.add_parser("tiers", help="list the tier presets")

    pl = sub.add_parser("plan", help="how long JOBS will take under a tier, before sending")
    pl.add_argument("jobs", nargs="+", metavar="JOBS")
    pl.add_argument(
        "--provider",
        choices=["openai", "gemini"],
        default=None,
        help="wire format (default: the tier's provider, else openai)",
    )
    pl.add_argument("--model", metavar="M", help="model for jobs that do not name their own")
    _column_flags(pl)
    _limit_flags(pl)
    pl.add_argument("--limits", metavar="FILE", help="TOML file of limits per model")

    b = sub.add_parser("bench", help="drive a synthetic load and measure what a tier gives")
    b.add_argument("--tier", metavar="NAME", required=True, help="tier preset (batcher tiers)")
    b.add_argument("--model", metavar="M", help="model (default: the tier's first)")
    b.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to drive the load (default 60)",
    )
    b.add_argument(
        "--base-url",
        metavar="URL",
        help="endpoint to measure (default: the mock provider enforcing the tier)",
    )
    b.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key")
    b.add_argument(
        "--max-concurrency",
        type=int,
        default=32,
        metavar="N",
        help="requests in flight at most (default 32)",
    )
    b.add_argument("--plot", metavar="FILE.png", help="draw requests per second against the limit")

    s = sub.add_parser("status", help="how far the run in DIR has got")
    s.add_argument("dir", metavar="DIR")

    m = sub.add_parser("mock-server", help="serve the mock provider on loopback")
    m.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    m.add_argument(
        "--provider",
        choices=["openai", "gemini"],
        default="openai",
        help="which base URL to print (both wire formats are always served)",
    )
    m.add_argument(
        "--latency-ms",
        default="0",
        metavar="MS",
        help="answer latency: MS, or MIN-MAX for a uniform range (default 0)",
    )
    m.add_argument("--seed", type=int, default=0, help="seed of the mock's randomness")
    _limit_flags(m)
    for flag, what in (
        ("--fail-500", "answer 500"),
        ("--fail-503", "answer 503"),
        ("--drop", "drop the connection mid-answer"),
        ("--truncate", "cut a 200's body short"),
        ("--slow", "answer after --slow-ms"),
    ):
        m.add_argument(
            flag,
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"share of requests to {what} (0 to 1)",
        )
    m.add_argument(
        "--slow-ms",
        type=float,
        default=5000.0,
        metavar="MS",
        help="delay of a slow answer (default 5000)",
    )
    return p


def _column_flags(p: argparse.ArgumentParser) -> None:
    cols = p.add_mutually_exclusive_group()
    cols.add_argument("--prompt-column", metavar="COL", help="take the prompt from this column")
    cols.add_argument(
        "--prompt-template",
        metavar="TEMPLATE",
        help="build the prompt from columns, e.g. 'Summarize: {text}'",
    )
    p.add_argument("--id-column", metavar="COL", help="take the job id from this column")


def _limit_flags(p: argparse.ArgumentParser, *, tier: bool = True) -> None:
    if tier:
        p.add_argument("--tier", metavar="NAME", help="tier preset of limits (batcher tiers)")
    p.add_argument("--rpm", type=int, metavar="N", help="requests per minute, for every model")
    p.add_argument("--tpm", type=int, metavar="N", help="tokens per minute, for every model")
    p.add_argument("--rpd", type=int, metavar="N", help="requests per quota day, for every model")


def _latency(text: str) -> tuple[float, float]:
    from ._errors import UsageError

    try:
        lo, _, hi = text.partition("-")
        low, high = float(lo), float(hi or lo)
    except ValueError:
        raise UsageError(f"--latency-ms takes MS or MIN-MAX, not {text!r}") from None
    if low < 0 or high < low:
        raise UsageError(f"--latency-ms {text!r}: need 0 <= MIN <= MAX")
    return low, high


def _cmd_run(args: argparse.Namespace) -> int:
    from ._api import run_sync
    from ._errors import UsageError

    jobs = list(args.jobs)
    if args.mock is not None and args.mock.endswith(_SUFFIXES):
        jobs.append(args.mock)  # `--mock jobs.jsonl`: the file was meant as a job file
        args.mock = "default"
    if args.mock is not None:
        from .mock import PRESETS

        if args.mock not in PRESETS:
            raise UsageError(
                f"unknown --mock preset {args.mock!r}; choose one of {sorted(PRESETS)}"
            )
    summary = run_sync(
        jobs,
        args.out,
        progress=not args.no_progress,
        provider=args.provider,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        model=args.model,
        max_concurrency=args.max_concurrency,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        prompt_column=args.prompt_column,
        prompt_template=args.prompt_template,
        id_column=args.id_column,
        mock=args.mock,
        tier=args.tier,
        rpm=args.rpm,
        tpm=args.tpm,
        rpd=args.rpd,
        limits_file=args.limits,
        retry_errors=args.retry_errors,
        redo_changed=args.redo_changed,
        on_daily_limit=args.on_daily_limit,
        quota_day=args.quota_day,
        handle_signals=True,
    )
    if summary.finished == 0 and summary.skipped:
        print(f"Nothing left to do: all {summary.skipped} jobs in {args.out} had finished.")
    print(
        f"{summary.total} jobs: {summary.ok} ok, {summary.errors} error"
        f" ({summary.finished} finished now, {summary.skipped} already done);"
        f" {summary.requests} requests in {summary.elapsed:.1f}s."
        f" Results: {Path(args.out) / 'results'}"
    )
    if summary.interrupted is not None:
        print(
            f"Interrupted: {summary.finished} jobs finished in this run are kept. Rerun the same "
            "command to go on.",
            file=sys.stderr,
        )
    elif summary.deferred:
        print(f"Stopped on the daily quota; {summary.deferred} jobs wait for it:", file=sys.stderr)
        for stop in summary.quota_stops:
            print(f"  {stop}", file=sys.stderr)
        print("Rerun the same command after the reset to go on.", file=sys.stderr)
    return summary.exit_code


def _cmd_status(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime

    from ._clock import QUOTA_TZ
    from ._progress import duration
    from ._status import read_status

    st = read_status(Path(args.dir), time.time())
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(st.error_kinds.items()))
    print(f"done {st.done} / {st.total}")
    print(f"ok {st.ok}")
    print(f"error {st.errors}" + (f" ({kinds})" if kinds else ""))
    print(f"remaining {st.remaining}")
    for model, spent in sorted(st.spent_today.items()):
        rpd = st.limits[model].rpd
        print(f"quota today {model}: {spent:,}" + (f" of {rpd:,} requests" if rpd else " requests"))
    reset = datetime.fromtimestamp(st.next_reset, QUOTA_TZ).strftime("%Y-%m-%d %H:%M %Z")
    print(f"next quota reset {reset}")
    if st.remaining:
        if st.pace:
            print(f"at the recent pace ({st.pace:,.0f} jobs/min): {duration(st.eta_at_pace)} left")
        if st.eta_at_tier is not None:
            print(f"at the tier's ceiling: {duration(st.eta_at_tier)} left")
    return EXIT_OK


def _cmd_tiers(args: argparse.Namespace) -> int:
    from ._limits import load_tiers

    day, source, tiers = load_tiers()
    print(f"Tier presets of {day} (source: {source}); RPM / TPM / RPD, '-' for none:")
    for tier in tiers.values():
        print(f"\n{tier.name} ({tier.provider})")
        for model, lim in tier.models.items():
            cells = [f"{v:,}" if v is not None else "-" for v in (lim.rpm, lim.tpm, lim.rpd)]
            print(f"  {model:<24} {' / '.join(cells)}")
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from ._jobs import ColumnMapping, JobSource
    from ._limits import LimitTable, load_tiers
    from ._plan import make_plan

    limits = LimitTable.build(
        tier=args.tier, rpm=args.rpm, tpm=args.tpm, rpd=args.rpd, limits_file=args.limits
    )
    provider = args.provider or (limits.tier.provider if limits.tier else "openai")
    mapping = ColumnMapping(args.prompt_column, args.prompt_template, args.id_column)
    plans = make_plan(
        JobSource(args.jobs, mapping), provider=provider, default_model=args.model, limits=limits
    )
    total = sum(p.jobs for p in plans)
    tokens = sum(p.input_tokens for p in plans)
    tier = f" under {args.tier} ({load_tiers()[0]})" if args.tier else ""
    print(f"{total:,} jobs, about {tokens:,} input tokens{tier}")
    for p in plans:
        print(f"\n{p.model}: {p.jobs:,} jobs, about {p.input_tokens:,} input tokens")
        print(f"  limits: {p.limits.describe()}")
        for name, minutes in p.minutes_by.items():
            print(f"  {name} alone: {_minutes(minutes)}")
        if p.no_quota:
            print("  RPD is 0: this tier gives the model no quota; nothing can be sent")
        elif p.days and p.days > 1:
            print(f"  RPD binds: {p.days} quota days ({p.limits.rpd:,} requests a day)")
        elif p.minutes is not None:
            print(f"  binding: {p.binding}; about {_minutes(p.minutes)}")
        else:
            print("  no per-minute limit known: the time depends on the server")
    return EXIT_OK


def _minutes(m: float) -> str:
    if m < 1:
        return f"{m * 60:.0f} s"
    if m < 120:
        return f"{m:.1f} min"
    return f"{m / 60:.1f} h"


def _cmd_bench(args: argparse.Namespace) -> int:
    import anyio

    from ._bench import plot, run_bench
    from ._limits import LimitTable
    from .mock import MockConfig, MockServer

    limits = LimitTable.build(tier=args.tier)
    assert limits.tier is not None
    model = args.model or next(iter(limits.tier.models))
    options: dict[str, object] = {
        "provider": limits.tier.provider,
        "tier": args.tier,
        "api_key_env": args.api_key_env,
        "max_concurrency": args.max_concurrency,
    }
    server = None
    if args.base_url is None:
        server = MockServer(MockConfig(latency_ms=(20.0, 200.0), limits=limits)).start()
        options["base_url"] = server.base_url(limits.tier.provider)
        options["api_key"] = "mock-key"
    else:
        options["base_url"] = args.base_url
    try:
        result = anyio.run(
            lambda: run_bench(limits=limits, model=model, seconds=args.seconds, options=options),
            backend="asyncio",
        )
    finally:
        if server is not None:
            server.stop()
    lim = result.limits
    where = "the mock provider" if server else args.base_url
    print(f"{model} on {where}, {result.seconds:.0f} s, limits {lim.describe()}")
    rpm_share = f" ({result.rpm / lim.rpm:.1%} of the ceiling)" if lim.rpm else ""
    tpm_share = f" ({result.tpm / lim.tpm:.1%} of the ceiling)" if lim.tpm else ""
    print(f"  achieved: {result.rpm:,.0f} RPM{rpm_share}, {result.tpm:,.0f} input TPM{tpm_share}")
    print(f"  answered 429: {result.share_429:.2%} of {len(result.samples):,} requests")
    print(
        f"  latency ms: p50 {result.latency_ms(0.5):.0f}, p90 {result.latency_ms(0.9):.0f},"
        f" p99 {result.latency_ms(0.99):.0f}"
    )
    if args.plot:
        plot(result, args.plot)
        print(f"  plot: {args.plot}")
    return EXIT_OK


def _cmd_mock_server(args: argparse.Namespace) -> int:
    from ._errors import UsageError
    from ._limits import LimitTable
    from .mock import Faults, MockConfig, MockServer

    limits = LimitTable.build(tier=args.tier, rpm=args.rpm, tpm=args.tpm, rpd=args.rpd)
    try:
        faults = Faults(
            args.fail_500, args.fail_503, args.drop, args.truncate, args.slow, args.slow_ms
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    config = MockConfig(
        latency_ms=_latency(args.latency_ms), seed=args.seed, limits=limits, faults=faults
    )
    server = MockServer(config, port=args.port)
    print(f"mock provider on {server.url}; base URL {server.base_url(args.provider)}", flush=True)
    server.serve_forever()
    return EXIT_OK


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now: the live display swaps it for one that prints
    above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_to_stderr() -> None:
    """batcher's own messages go to stderr; other libraries' (httpx logs every request) do not."""
    log = logging.getLogger("batcher")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("batcher: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batcher`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    # Arrow's default allocator (mimalloc) keeps what it freed: reading a large Parquet file
    # then holds ~100 MiB more than the system allocator does. Set before pyarrow is imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _log_to_stderr()
    from ._errors import FatalProviderError, InputError, UsageError

    commands = {
        "run": _cmd_run,
        "status": _cmd_status,
        "tiers": _cmd_tiers,
        "plan": _cmd_plan,
        "bench": _cmd_bench,
        "mock-server": _cmd_mock_server,
    }
    try:
        return commands[args.command](args)
    except UsageError as e:
        print(f"batcher: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except InputError as e:
        print(f"batcher: bad input, nothing was sent:\n{e}", file=sys.stderr)
        return EXIT_USAGE
    except FatalProviderError as e:
        print(f"batcher: the provider refused the run: {e.message}", file=sys.stderr)
        print("Finished jobs are kept; rerun the same command to go on.", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("batcher: interrupted; rerun the same command to go on.", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> None:
    sys.exit(main())
