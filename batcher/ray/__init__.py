"""batcher on a Ray cluster: the same lanes, quotas and exactly-once results as one machine.

``process(ds, out, ...)`` maps a ``ray.data.Dataset`` of job rows to a Dataset of result rows
(the results' schema), so it composes with the rest of a Ray pipeline; ``batcher run ... --ray
local|ADDRESS`` runs a command-line job on a cluster (``ray.run.run_files``). Needs the
``batcher[ray]`` extra; ray is imported only when called (``ray.cluster``), so ``import batcher``
works without it.

Each worker (``ray.worker.BlockWorker``) sends its blocks through the pool, executors and lanes
of a local run (a pool of one without ``--pool``, ``ray.worker_pool``); the lanes of every worker
draw on one budget per account (an endpoint's project, else its key): a named, detached async
actor (``_admission.grants.Budget``, see ``ray.endpoints``) that grants capacity in chunks, so
the cluster as a whole stays under each model's RPM, TPM and RPD and a 429 pauses every worker of
that model. Under ``--budget`` the workers reserve each job's cost from one spend
(``_engine.budget.SharedSpend``), an actor of the run (``ray.mapping``). Each block's results are
journaled, then written as a part of ``DIR/results``, exactly once even when Ray retries a block
whose worker died (``ray.blocks``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._config.options import RunOptions
from .._core.errors import UsageError
from .._rundir.image_files import clear_partial
from .blocks import done_hashes, recover
from .cluster import LOCAL_ENV, connect, import_ray
from .endpoints import Endpoints, budget
from .mapping import (
    BATCH_SIZE,
    check_no_batches,
    check_options,
    map_blocks,
    run_schema,
    shared_spend,
)
from .run import Interrupt, ThreadClock, run_files

__all__ = [
    "LOCAL_ENV",
    "Interrupt",
    "ThreadClock",
    "budget",
    "connect",
    "process",
    "run_files",
    "shared_spend",
]

_started: list[Endpoints] = []
"""Endpoints started for datasets not yet consumed (an embedded mock lives as long as this
process)."""


def process(
    ds: Any,
    out: str | os.PathLike[str],
    *,
    workers: int = 2,
    batch_size: int = BATCH_SIZE,
    num_cpus: float = 1.0,
    options: RunOptions | None = None,
    **flat: Any,
) -> Any:
    """Send the jobs of ``ds`` (rows as in a job file; each needs an id) and return a Dataset of
    their result rows, the schema of ``DIR/results``; ``out`` gets every result, exactly once.

    Options are ``batcher.run``'s (``options=`` or its keywords); ``max_concurrency`` is per
    worker, and limits are for the whole cluster. ``workers`` actors (of ``num_cpus`` each) send
    blocks of ``batch_size`` jobs. Ids already finished in ``out`` are skipped and give no row;
    a row that cannot be sent comes back with ``status="error"``, as a provider's error does.
    The Dataset is lazy: nothing is sent until it is consumed (``write_parquet``, ``take``...).
    """
    if options is not None and flat:
        raise TypeError("give options= or option keywords, not both")
    opts = options if options is not None else RunOptions(**flat)
    if workers < 1 or batch_size < 1:
        raise UsageError("workers and batch_size must be at least 1")
    opts = check_options(opts)
    import_ray()
    path = Path(out)
    check_no_batches(path)
    schema = run_schema(opts)
    recover(path, schema.arrow_type() if schema is not None else None)
    clear_partial(path)
    endpoints = Endpoints(opts, schema)
    endpoints.start()
    _started.append(endpoints)
    prices = opts.costs.prices()
    return map_blocks(
        ds,
        path,
        opts,
        endpoints.for_workers(path),
        done_hashes(path),
        workers,
        batch_size,
        num_cpus,
        spend=shared_spend(opts, path, prices),
        prices=prices,
    )
