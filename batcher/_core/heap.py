"""The process's heap made quiet for a run: what would stall the event loop mid-run done first.

Two pauses of the whole process otherwise fall in the middle of a run, each long enough to cost
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

Measured with ``benchmarks/throughput.py --only rpm-per-second-30k``: see README.
"""

from __future__ import annotations

import gc

import anyio

__all__ = ["quiet_heap", "release_heap", "warm_arrow"]


def warm_arrow() -> None:
    """Make Arrow's first array, which imports pandas where it is installed."""
    import pyarrow as pa

    pa.array([0], type=pa.int64())


async def quiet_heap() -> None:
    """Warm Arrow on a worker thread, then freeze the heap: a task to start as a run starts,
    with ``release_heap`` once it has ended."""
    await anyio.to_thread.run_sync(warm_arrow)
    gc.freeze()


def release_heap() -> None:
    """Give what ``quiet_heap`` froze back to the collector."""
    gc.unfreeze()
