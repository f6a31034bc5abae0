"""The ``batcher`` command: parse arguments, hand them to the command's module (``run.py``,
``status.py``, ...), and map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .exits import (
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OUTAGE,
    EXIT_SOFTWARE,
    EXIT_USAGE,
)

__all__ = ["console_main", "main"]


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
    r.add_argument(
        "jobs",
        nargs="+",
        metavar="JOBS",
        help=".jsonl, .jsonl.gz or .parquet files: paths, or s3://, gs://, az://, hf:// URLs (with "
        "globs: s3://bucket/prefix/*.parquet) or an https:// URL",
    )
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (results/ inside)")
    add_flags(
        r,
        ("endpoint", "requests", "columns", "limits", "resume", "costs", "batch", "media", "pool"),
        overrides={"provider": {"default": None}},  # so that --pool can refuse it when given
    )
    r.add_argument("--no-progress", action="store_true", help="no progress display or lines")
    r.add_argument(
        "--export",
        metavar="URL",
        help="once the run is done, write its results as one Parquet file to URL (s3://, gs://, "
        "az://, hf:// or a path; URL/results.parquet unless it ends in .parquet), published whole",
    )

    command("tiers", "list the tier presets")

    ex = command("export", "write the results in DIR to URL as one Parquet file, published whole")
    ex.add_argument("dir", metavar="DIR")
    ex.add_argument(
        "url",
        metavar="URL",
        help="s3://, gs://, az://, hf:// or a path; URL/results.parquet unless it ends in .parquet",
    )

    pl = command("plan", "how long JOBS will take under a tier, before sending")
    pl.add_argument("jobs", nargs="+", metavar="JOBS")
    add_flags(
        pl,
        ("endpoint", "requests", "columns", "limits", "costs", "media"),
        only=(
            *("provider", "model", "prompt_column", "prompt_template", "id_column"),
            *("tier", "rpm", "tpm", "rpd", "limits_file", "prices_file", "schema", "api"),
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
        ("limits", "requests", "endpoint", "media"),
        only=("tier", "model", "base_url", "api_key_env", "max_concurrency", "api", "dimensions"),
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
    m.add_argument(
        "--openai-window",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="quantize OpenAI-style limits per this many seconds (default 1; Azure: 1 or 10)",
    )
    m.add_argument(
        "--token-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="count prompt tokens X times the mock's own tokenizer (default 1)",
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
    m.add_argument(
        "--file-ttl",
        type=float,
        default=48 * 3600.0,
        metavar="SECONDS",
        help="seconds an uploaded file lives (default 48 h, as Gemini's); requests naming it "
        "after are refused",
    )
    m.add_argument(
        "--file-processing",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds a video uploaded to Gemini's Files API stays PROCESSING before it is "
        "ACTIVE (default 0); requests naming it meanwhile are refused",
    )
    return p


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
        NetworkRefused,
        Outage,
        UsageError,
        WriteFailed,
    )

    try:
        return _handler(args.command)(args)
    except BadOption as e:
        _say(f"error: {option_flag(e.option)} {e.reason}")
        return EXIT_USAGE
    except UsageError as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    except InputError as e:
        _say(f"bad input, nothing was sent:\n{e}")
        return EXIT_USAGE
    except NetworkRefused as e:  # a proxy, or a certificate: the message says what to fix
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


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that carries out ``command``, imported only when it runs: ``--help`` and a
    quick command do not load what the others need."""
    match command:
        case "run":
            from .run import run_command

            return run_command
        case "status":
            from .status import status_command

            return status_command
        case "show":
            from .show import show_command

            return show_command
        case "report":
            from .report import report_command

            return report_command
        case "tiers":
            from .tiers import tiers_command

            return tiers_command
        case "export":
            from .export import export_command

            return export_command
        case "plan":
            from .plan import plan_command

            return plan_command
        case "bench":
            from .bench import bench_command

            return bench_command
        case "mock-server":
            from .mock_server import mock_server_command

            return mock_server_command
    raise AssertionError(f"no command {command!r}")  # argparse allows only the ones above


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
