"""The ``batcher`` command: parse arguments, call the library, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._core.stats import RunSummary

__all__ = ["main"]

# The codes a command chooses here; those of a finished run (0, 1, 3, 5, 130, 143) are
# RunSummary.exit_code. 70, 74, 75 and 78 are sysexits.h's EX_SOFTWARE, EX_IOERR, EX_TEMPFAIL
# and EX_CONFIG (a proxy that refuses the run: the network's settings need fixing).
EXIT_OK, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 2, 4, 130
EXIT_SOFTWARE, EXIT_IO, EXIT_OUTAGE, EXIT_CONFIG, EXIT_BROKEN_PIPE = 70, 74, 75, 78, 141
_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batcher")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose error for an unknown flag names the command's closest flag."""

    commands: dict[str, argparse.ArgumentParser]

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        import difflib

        parsed, extras = self.parse_known_args(args, namespace)
        if not extras:
            return parsed
        commands: dict[str, argparse.ArgumentParser] = getattr(self, "commands", {})
        where = commands.get(getattr(parsed, "command", None) or "", self)
        known = [s for a in where._actions for s in a.option_strings]
        message = f"unrecognized arguments: {' '.join(extras)}"
        for word in extras:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        where.error(message)


def _parser() -> argparse.ArgumentParser:
    from .flags import add_flags

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p.commands[name] = sub.add_parser(name, help=help, allow_abbrev=False)
        return p.commands[name]

    p = _Parser(
        prog="batcher",
        description="Push large sets of LLM prompts through rate-limited APIs, never losing work.",
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"batcher {_version()}")
    p.commands = {}
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = command("run", "run job files into an output directory")
    r.add_argument("jobs", nargs="+", metavar="JOBS", help=".jsonl, .jsonl.gz or .parquet files")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (results/ inside)")
    add_flags(
        r,
        ("endpoint", "requests", "columns", "limits", "resume", "costs", "batch", "media", "pool"),
        overrides={"provider": {"default": None}},  # so that --pool can refuse it when given
    )
    r.add_argument("--no-progress", action="store_true", help="no progress display or lines")

    command("tiers", "list the tier presets")

    pl = command("plan", "how long JOBS will take under a tier, before sending")
    pl.add_argument("jobs", nargs="+", metavar="JOBS")
    add_flags(
        pl,
        ("endpoint", "requests", "columns", "limits", "costs"),
        only=(
            *("provider", "model", "prompt_column", "prompt_template", "id_column"),
            *("tier", "rpm", "tpm", "rpd", "limits_file", "prices_file", "schema"),
        ),
        overrides={
            "provider": {
                "default": None,
                "help": "wire format (default: the tier's provider, else openai)",
            },
        },
    )

    b = command("bench", "drive a synthetic load and measure what a tier gives")
    add_flags(
        b,
        ("limits", "requests", "endpoint"),
        only=("tier", "model", "base_url", "api_key_env", "max_concurrency"),
        overrides={
            "tier": {"required": True},
            "model": {"help": "model (default: the tier's first)"},
            "base_url": {
                "help": "endpoint to measure (default: the mock provider enforcing the tier)"
            },
            "max_concurrency": {
                "help": "requests in flight at most (default: as many as the tier's rate times "
                "the answers' times needs)"
            },
        },
    )
    b.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to drive the load (default 60)",
    )
    b.add_argument("--plot", metavar="FILE.png", help="draw requests per second against the limit")

    s = command("status", "how far the run in DIR has got")
    s.add_argument("dir", metavar="DIR")
    add_flags(s, ("pool",), only=("quota_store",))

    rp = command("report", "write an HTML report of the run in DIR (charts, cost, errors)")
    rp.add_argument("dir", metavar="DIR")
    rp.add_argument(
        "-o", "--output", metavar="FILE.html", help="where to write it (default DIR/report.html)"
    )

    sh = command("show", "a table of the results in DIR")
    sh.add_argument("dir", metavar="DIR")
    sh.add_argument("-n", type=int, default=20, metavar="N", help="rows to show (default 20)")
    sh.add_argument("--errors", action="store_true", help="only jobs that ended in error")
    sh.add_argument(
        "--columns",
        metavar="COL,...",
        help="columns to show, comma-separated (default: id, status, model, tokens, cost, text)",
    )

    m = command("mock-server", "serve the mock provider on loopback")
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
    m.add_argument(
        "--openai-per-minute",
        action="store_true",
        help="enforce OpenAI-style limits over a sliding minute, not quantized per second",
    )
    add_flags(m, ("limits",), only=("tier", "rpm", "tpm", "rpd"))
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
    m.add_argument(
        "--batch-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds a batch runs before its lines are answered (default 0: at once)",
    )
    m.add_argument(
        "--batch-gradual",
        action="store_true",
        help="answer a batch's lines one by one over --batch-delay, not all at its end",
    )
    return p


def _latency(text: str) -> tuple[float, float]:
    from .._core.errors import UsageError

    try:
        lo, _, hi = text.partition("-")
        low, high = float(lo), float(hi or lo)
    except ValueError:
        raise UsageError(f"--latency-ms takes MS or MIN-MAX, not {text!r}") from None
    if low < 0 or high < low:
        raise UsageError(f"--latency-ms {text!r}: need 0 <= MIN <= MAX")
    return low, high


def _cmd_run(args: argparse.Namespace) -> int:
    from .._api import run_sync
    from .._core.errors import UsageError
    from .._engine.pool import PER_ENDPOINT, refuse_per_endpoint
    from .flags import options_from_args

    if not args.out:
        raise UsageError("--out needs a directory")
    if args.pool_file is not None:  # the library cannot tell --provider openai from the default
        refuse_per_endpoint(n for n in PER_ENDPOINT if getattr(args, n, None) is not None)
    if args.mock is not None and args.mock.endswith(_SUFFIXES):
        args.jobs.append(args.mock)  # `--mock jobs.jsonl`: the file was meant as a job file
        args.mock = "default"
    summary = run_sync(
        list(args.jobs),
        args.out,
        options=options_from_args(args),
        progress=not args.no_progress,
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
    if summary.spent_usd or summary.cost_usd:
        print(_cost_line(summary))
    if summary.timeouts:
        print(_timeouts_line(summary, args.out))
    if summary.budget_stop is not None:
        from .._config.prices import usd

        spent = sum(summary.spent_usd.values())
        print(
            f"Stopped at the budget of {usd(args.budget)}: spent {usd(spent)}"
            f" in {args.out}, {summary.remaining} jobs left ({summary.budget_stop}). Rerun with"
            " a larger --budget to go on.",
            file=sys.stderr,
        )
    if summary.batches_pending and summary.interrupted is None:
        print(
            f"{summary.batches_pending} batches pending: rerun the same command to collect.",
            file=sys.stderr,
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


def _cost_line(summary: RunSummary) -> str:
    from .._config.prices import usd

    models = ", ".join(f"{m} {usd(c)}" for m, c in sorted(summary.spent_usd.items()))
    total = sum(summary.spent_usd.values())
    return f"Cost: {usd(summary.cost_usd)} this run; {usd(total)} in all ({models})."


def _timeouts_line(summary: RunSummary, out: str) -> str:
    n = summary.timeouts
    return (
        f"{n} timed-out request{'s' if n != 1 else ''} may have been billed: a provider may "
        "finish a request after it times out here, at a cost not counted in this summary "
        f"(outcome 'timeout' in {Path(out) / 'attempts'})."
    )


def _cmd_status(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    import anyio

    from .._admission.quota import spent_today
    from .status import read_status

    now = time.time()
    status = read_status(Path(args.dir), now)  # first: a DIR that holds no run is the error
    shared = anyio.run(spent_today, args.quota_store, now, backend="asyncio")
    status = dataclasses.replace(status, shared=tuple(shared))
    print("\n".join(status.lines()))
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .._core.errors import UsageError
    from .show import ShowRequest, show_table

    if args.n < 0:
        raise UsageError("-n must be 0 or more")
    columns = (
        tuple(c.strip() for c in args.columns.split(",") if c.strip()) if args.columns else None
    )
    console = Console(soft_wrap=False)
    request = ShowRequest(Path(args.dir), args.n, args.errors, columns)
    table, note = show_table(request, console.width)
    console.print(table)
    console.print(note, highlight=False)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(Path(args.dir), Path(args.output) if args.output else None)
    print(f"report: {path}")
    return EXIT_OK


def _cmd_tiers(args: argparse.Namespace) -> int:
    from .._config.limits import describe_tiers

    print("\n".join(describe_tiers()))
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from .._config.limits import load_tiers
    from .._config.options import CostOptions, LimitOptions
    from .._jobs import ColumnOptions, JobSource
    from .flags import group_from_args
    from .plan import describe_plan, make_plan

    limits = group_from_args(LimitOptions, args).table()
    provider = args.provider or (limits.tier.provider if limits.tier else "openai")
    columns = group_from_args(ColumnOptions, args)
    source = JobSource(args.jobs, columns, provider=provider, default_model=args.model)
    schema = None
    if args.schema is not None:
        from .._config.schema import load_schema

        schema = load_schema(args.schema)
        schema.check_wire(provider)
    prices = group_from_args(CostOptions, args).prices()
    plans = make_plan(source, limits=limits, prices=prices, schema=schema)
    tier = f" under {args.tier} ({load_tiers()[0]})" if args.tier else ""
    print("\n".join(describe_plan(plans, tier)))
    if schema is not None:
        from .._admission.estimate import TokenEstimator, features

        each = TokenEstimator().estimate(features(schema.text))
        print(f"\n(input tokens include the schema's, about {each:,} a request: it is billed)")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import anyio

    from .._config.options import LimitOptions
    from .._core.errors import UsageError, WriteFailed
    from .bench import plot, pyplot, run_bench
    from .flags import group_from_args

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
    }
    if args.base_url is None:
        from ..mock import MockConfig

        options["mock"] = MockConfig(latency_ms=(20.0, 200.0), limits=limits)
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


def _cmd_mock_server(args: argparse.Namespace) -> int:
    from .._config.options import LimitOptions
    from .._core.errors import UsageError
    from ..mock import Faults, MockConfig, MockServer
    from .flags import group_from_args

    limits = group_from_args(LimitOptions, args).table()
    try:
        faults = Faults(
            args.fail_500, args.fail_503, args.drop, args.truncate, args.slow, args.slow_ms
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 0 <= args.batch_delay < math.inf:
        raise UsageError(f"--batch-delay must be 0 or more seconds, got {args.batch_delay}")
    config = MockConfig(
        latency_ms=_latency(args.latency_ms),
        seed=args.seed,
        limits=limits,
        faults=faults,
        openai_per_second=not args.openai_per_minute,
        batch_delay=args.batch_delay,
        batch_gradual=args.batch_gradual,
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
    """Entry point of the ``batcher`` console script; returns the exit code.

    Nothing a user can cause ends in a traceback: expected failures print one line and exit
    with their documented code; anything else writes its traceback to a log file (in the output
    directory when there is one), names it in one line, and exits 70.
    """
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    # Arrow's default allocator (mimalloc) keeps what it freed: reading a large Parquet file
    # then holds ~100 MiB more than the system allocator does. Set before pyarrow is imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _log_to_stderr()
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # the reader of our output went away (`batcher status DIR | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _say("interrupted; rerun the same command to go on.")
        return EXIT_INTERRUPTED
    except Exception as e:  # not one of ours: keep the traceback, say where it is
        return _unexpected(e, args)


def _dispatch(args: argparse.Namespace) -> int:
    from .._config.options import option_flag
    from .._core.errors import (
        BadOption,
        FatalProviderError,
        InputError,
        Outage,
        ProxyRefused,
        UsageError,
        WriteFailed,
    )

    commands = {
        "run": _cmd_run,
        "status": _cmd_status,
        "show": _cmd_show,
        "report": _cmd_report,
        "tiers": _cmd_tiers,
        "plan": _cmd_plan,
        "bench": _cmd_bench,
        "mock-server": _cmd_mock_server,
    }
    try:
        return commands[args.command](args)
    except BadOption as e:
        _say(f"error: {option_flag(e.option)} {e.reason}")
        return EXIT_USAGE
    except UsageError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    except InputError as e:
        _say(f"bad input, nothing was sent:\n{e}")
        return EXIT_USAGE
    except ProxyRefused as e:
        _say(e.message)
        print("Finished jobs are kept; rerun the same command to go on.", file=sys.stderr)
        return EXIT_CONFIG
    except FatalProviderError as e:
        _say(f"the provider refused the run: {e.message}")
        print("Finished jobs are kept; rerun the same command to go on.", file=sys.stderr)
        return EXIT_FATAL
    except WriteFailed as e:
        _say(str(e))
        return EXIT_IO
    except Outage as e:
        _say(str(e))
        return EXIT_OUTAGE


def _say(message: str) -> None:
    print(f"batcher: {message}", file=sys.stderr)


def _unexpected(error: Exception, args: argparse.Namespace) -> int:
    """Write the traceback of a bug to a log file and name it in one line."""
    import tempfile
    import time
    import traceback

    folder = Path(getattr(args, "out", None) or getattr(args, "dir", None) or tempfile.gettempdir())
    if not folder.is_dir():
        folder = Path(tempfile.gettempdir())
    path = folder / f"batcher-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.write_text("".join(traceback.format_exception(error)))
        where = f"the traceback is in {path}"
    except OSError:
        where = "the traceback could not be written"
    _say(f"internal error ({type(error).__name__}: {error}); {where}. Please report it.")
    return EXIT_SOFTWARE


def console_main() -> None:
    sys.exit(main())
