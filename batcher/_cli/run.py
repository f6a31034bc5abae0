"""``batcher run``: run job files into an output directory, then say what happened and what next."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._api import run_sync
from .._config.pool_file import PER_ENDPOINT, refuse_per_endpoint
from .._config.prices import usd
from .._core.errors import UsageError
from .._core.stats import RunSummary
from .flags import options_from_args

__all__ = ["run_command"]

_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


def run_command(args: argparse.Namespace) -> int:
    """Run the jobs, print the summary (and why it stopped, if it did); the run's exit code."""
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
    if args.export is not None:
        from .export import export_after_run

        failed = export_after_run(summary, args.out, args.export)
        if failed is not None:
            return failed
    return summary.exit_code


def _cost_line(summary: RunSummary) -> str:
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
