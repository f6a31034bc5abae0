"""``batcher export DIR URL``, and ``batcher run --export URL``: a run's results as one Parquet
file in object storage, on the Hub or on a disk, published whole (``_rundir.export``)."""

from __future__ import annotations

import argparse
import sys

from .._core.stats import RunSummary
from .._rundir.export import export
from .exits import EXIT_IO, EXIT_OK

__all__ = ["export_after_run", "export_command"]


def export_command(args: argparse.Namespace) -> int:
    """Export the results of DIR to URL; 74 if the destination cannot be written."""
    return _export(args.dir, args.url)


def export_after_run(summary: RunSummary, out: str, url: str) -> int | None:
    """``--export``: export a run that has finished every job it could (some may have ended in
    error); one that stopped before (a signal, a quota, the budget, batches still running) is
    not exported, and says how. The exit code of a failed export, else None."""
    if summary.interrupted is not None or summary.deferred or summary.budget_stop is not None:
        print(f"Not exported: the run has jobs left. Rerun it to go on (--export {url} "
              f"exports once it is done), or `batcher export {out} {url}` as it is.",
              file=sys.stderr)  # fmt: skip
        return None
    if summary.batches_pending:
        print("Not exported: batches are pending; the run that collects them exports.",
              file=sys.stderr)  # fmt: skip
        return None
    code = _export(out, url)
    return code if code != EXIT_OK else None


def _export(out: str, url: str) -> int:
    from .._core.stores import shown_url

    try:
        done = export(out, url)
    except OSError as e:
        print(f"batcher: cannot export to {shown_url(url)}: {e}", file=sys.stderr)
        return EXIT_IO
    print(f"Exported {done.rows} results to {done.url}.")
    return EXIT_OK
