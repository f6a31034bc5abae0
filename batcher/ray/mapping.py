"""What a cluster run does on its driver before and while the workers send, whichever way it is
started (``batcher.ray.process``, ``batcher run --ray``): the options checked and made ready to
travel to the workers, the run's spend under ``--budget``, and the dataset mapped over the workers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .._config.options import RunOptions, option_flag
from .._config.prices import Prices
from .._config.schema import OutputSchema, load_schema
from .._core.errors import UsageError
from .._core.idset import IdSet
from .._engine import support
from .._engine.budget import SharedSpend
from .._rundir.batchlog import BatchLog
from .._wire.providers import get_provider
from .cluster import import_ray
from .endpoints import Endpoint, run_specs
from .worker import BLOCKS, BlockWorker

__all__ = [
    "BATCH_SIZE",
    "check_no_batches",
    "check_options",
    "map_blocks",
    "run_schema",
    "shared_spend",
]

BATCH_SIZE = 256
"""Jobs in a block a worker sends at once (and writes as one part of the results)."""


def check_options(opts: RunOptions) -> RunOptions:
    """Refuse what a cluster run does not do (yet: the ``ray`` column of ``_engine.support``),
    and what a local run refuses, before Ray starts. Return the options
    as the workers take them: the output schema loaded here (its file read, its pydantic model
    imported, checked for the wire), so that a worker needs neither the file nor this process's
    working directory, and types ``parsed`` as a local run does (a model travels by reference:
    its module must be importable on the workers, see README)."""
    specs, _ = run_specs(opts)  # a pool file is read and checked here
    # the ``ray`` column of the one table of what each way does
    support.check(opts, ray=True, provider=specs[0].provider)
    wires = sorted({spec.provider for spec in specs})
    for wire in wires:
        get_provider(wire, opts.media.api)  # --endpoint images speaks OpenAI's
    if opts.requests.schema is None:
        return opts
    schema = load_schema(opts.requests.schema)
    for wire in wires:  # each endpoint asks for the schema in its own wire's form
        schema.check_wire(wire)
    return replace(opts, requests=replace(opts.requests, schema=schema))


def run_schema(opts: RunOptions) -> OutputSchema | None:
    """The run's output schema, once ``check_options`` loaded it."""
    schema = opts.requests.schema
    assert schema is None or isinstance(schema, OutputSchema)
    return schema


def check_no_batches(out: Path) -> None:
    """Refuse a directory whose batches are still pending: they may still answer (and bill) jobs
    the cluster would send again; a run without ``--ray`` cancels and collects them first."""
    pending = BatchLog(out).open_chunks()
    if pending:
        raise UsageError(
            f"{out} has {len(pending)} batches still pending: collect them (rerun with --mode "
            f"batch), or run once without {option_flag('ray')} (it cancels them and keeps what "
            "they answered) before sending online on a cluster"
        )


def shared_spend(options: RunOptions, out: Path, prices: Prices) -> Any:
    """Under ``--budget``, the run's spend for every worker to reserve from: an async actor
    (``_engine.budget.SharedSpend``) starting at what ``out``'s results cost already; None
    without a budget. It lives as long as this driver."""
    from .._rundir.results import read_costs

    if options.costs.budget is None:
        return None
    spent = sum(read_costs(out).values())
    actor = import_ray().remote(SharedSpend).options(num_cpus=0)
    return actor.remote(options.costs.budget, spent, prices)


def map_blocks(
    ds: Any,
    out: Path,
    opts: RunOptions,
    endpoints: list[Endpoint],
    done: IdSet,
    workers: int,
    batch_size: int,
    num_cpus: float,
    *,
    run: str = "",
    spend: Any = None,
    prices: Prices | None = None,
) -> Any:
    ray = import_ray()
    return ds.map_batches(
        BlockWorker,
        fn_constructor_kwargs={
            "out": str(out.absolute()),  # a worker's working directory is not this one
            "options": opts,
            "endpoints": endpoints,
            "done": done,
            "run": run,
            "spend": spend,
            "prices": prices,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(
            size=workers, max_concurrent_calls_per_actor=BLOCKS, enable_true_multi_threading=True
        ),
        num_cpus=num_cpus,
    )
