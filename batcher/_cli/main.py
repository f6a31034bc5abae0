"""The ``batcher`` command: parse arguments (their grammar in ``parser.py``), hand them to the
command's module (``run.py``, ``status.py``, ...), and map errors to exit codes."""

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
from .parser import build_parser

__all__ = ["console_main", "main"]


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
        args = build_parser().parse_args(argv)
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
