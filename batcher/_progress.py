"""The live progress display (rich, on a terminal) and plain periodic log lines (elsewhere)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

import anyio

from ._config.prices import usd
from ._core.stats import Statistics

__all__ = ["duration", "format_line", "show_progress"]


def duration(seconds: float | None) -> str:
    """``1h02m03s`` or ``2m05s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def format_line(st: Statistics) -> str:
    """One line saying where the run stands."""
    done = st.done + st.skipped
    return (
        f"{done}/{st.total} done ({st.ok} ok, {st.errors} error"
        + (f", {st.skipped} already done" if st.skipped else "")
        + f") | {st.requests_per_minute:,.0f} req/min | {st.tokens_per_minute:,.0f} tok/min"
        + (f" | {usd(st.cost_usd)}" if st.cost_usd else "")
        + f" | in flight {st.in_flight} | ETA {duration(st.eta)}"
        + (f" | waiting for the quota reset: {duration(st.quota_wait)}" if st.quota_wait else "")
        + (f" | batches: {st.batches}" if st.batches else "")
    )


async def show_progress(
    snapshot: Callable[[], Statistics],
    *,
    stream: TextIO | None = None,
    interval: float = 10.0,
) -> None:
    """Show progress until cancelled: a live bar on a terminal, else a line every ``interval``."""
    out = stream or sys.stderr
    if out.isatty():
        await _live(snapshot, out)
    else:
        try:
            while True:
                await anyio.sleep(interval)
                print(format_line(snapshot()), file=out, flush=True)
        finally:
            print(format_line(snapshot()), file=out, flush=True)


async def _live(snapshot: Callable[[], Statistics], out: TextIO) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]batcher"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=Console(file=out),
    )
    task = progress.add_task("run", total=None, detail="")

    def update() -> None:
        st = snapshot()
        detail = (
            f"ok {st.ok} err {st.errors} | {st.requests_per_minute:,.0f} rpm"
            f" | {st.tokens_per_minute:,.0f} tpm"
            + (f" | {usd(st.cost_usd)}" if st.cost_usd else "")
            + f" | in flight {st.in_flight}"
        )
        if st.quota_wait:
            detail += f" | quota resets in {duration(st.quota_wait)}"
        if st.batches:
            detail += f" | batches: {st.batches}"
        progress.update(task, total=st.total, completed=st.done + st.skipped, detail=detail)

    with progress:
        try:
            while True:
                update()
                await anyio.sleep(0.5)
        finally:
            update()
