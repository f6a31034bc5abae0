"""The process's heap made quiet for a run: what would stall the event loop mid-run done first.

Pauses of the whole process otherwise fall in the middle of a run, each long enough to cost
a paced lane its slots (at 500 requests a second, 100 ms is 50 requests that never recover,
since a lane does not send in bursts to catch up):

- Where pandas is installed (Ray's extra brings it), Arrow's first array imports it: about 370
  modules, 0.4-0.6 s holding the interpreter's lock, on the worker thread of the run's first
  journal compaction (5,000 answers in). ``warm_arrow`` makes that first array at the start,
  on a worker thread, while the lane waits for its first answer.
- A full garbage collection walks every object tracked, most of them the imported modules and
  what the run loaded before it sent anything: 40-65 ms each, every 10-20 s at high rates.
  ``quiet_heap`` then moves them out of the collector's way (``gc.freeze``) until the run ends
  (``release_heap``); objects made during the run are collected as always.
- With requests that take seconds, each of the thousands in flight (a few hundred objects each)
  outlives the youngest generation's collections and is walked again by every collection of the
  middle one (Python's default: every 10 of the youngest) until it is promoted, and then by the
  full ones: at 30,000 RPM with answers of 2-4 s, 2.6 s of collections in a 65 s run. Collecting
  the older generations every ``OLDER_EVERY`` instead lets most requests end before they are
  walked twice (only cycles wait for a collection; the rest is freed as it is dropped).

Measured with ``benchmarks/throughput.py --only rpm-per-second-30k`` and ``--only slow-2-4s-30k``:
see README.
"""

from __future__ import annotations

import gc

import anyio

__all__ = ["OLDER_EVERY", "quiet_heap", "release_heap", "warm_arrow"]

OLDER_EVERY = 100
"""During a run, the older generations are collected every this many collections of the one
below them, not every 10 (Python's default): see the module's note."""

_before: list[tuple[int, int, int]] = []
"""The collector's thresholds before each run that changed them, to give back."""


def warm_arrow() -> None:
    """Make Arrow's first array, which imports pandas where it is installed."""
    import pyarrow as pa

    pa.array([0], type=pa.int64())


async def quiet_heap() -> None:
    """Collect the older generations less often, warm Arrow on a worker thread, then freeze the
    heap: a task to start as a run starts, with ``release_heap`` once it has ended."""
    young, middle, old = gc.get_threshold()
    _before.append((young, middle, old))
    gc.set_threshold(young, max(middle, OLDER_EVERY), max(old, OLDER_EVERY))
    await anyio.to_thread.run_sync(warm_arrow)
    gc.freeze()


def release_heap() -> None:
    """Give what ``quiet_heap`` froze back to the collector, and its thresholds as they were."""
    gc.unfreeze()
    if _before:
        gc.set_threshold(*_before.pop())
