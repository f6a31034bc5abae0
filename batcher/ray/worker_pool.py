"""A worker's pool: the run's endpoints as a local run has them (``_engine.pool``), each endpoint's
lanes gated by the cluster-wide budget of its account (``_admission.grants``), or, when the run
names a quota store (``--quota-store``), sharing its account's limits through that store as a local
run's lanes do.

The worker sends each job through ``PoolExecutor`` as a local run does: the endpoint that can send
it soonest, a higher ``priority`` first, a refusal or a spent day moving the job on to another
endpoint; each result names its endpoint. A lane still paces itself, and each admission waits for
a slot its budget granted, so every worker's lanes of one account stay, together, under its
limits; images per minute (``--ipm``) are counted by the same budget. With a quota store, each
worker is one more process holding a lease on the account (``_admission.quota``): the workers, the
other clusters and the local runs on that account share its per-minute limits and its day's count.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._admission.budget_gate import Gate
from .._admission.grants import GiveBack, Grant
from .._admission.ipm import ImageAdmission, SharedImageGate
from .._admission.lanes import Lanes
from .._admission.quota import QuotaStore, open_store
from .._config.options import RunOptions
from .._config.prices import Prices
from .._config.schema import OutputSchema
from .._core.clock import Clock
from .._engine.pool import Pool, route_executor, spec_account
from .._engine.tally import Tally
from .._wire.endpoint import Target
from .endpoints import Endpoint, endpoint_provider

__all__ = ["open_worker_pool"]


async def open_worker_pool(
    endpoints: list[Endpoint],
    options: RunOptions,
    *,
    schema: OutputSchema | None,
    clock: Clock,
    tally: Tally,
    prices: Prices,
    out: Path,
) -> Pool:
    """The run's endpoints on this worker, each with its executor and its gated lanes (a pool of
    one, serving every model, for a run without ``--pool``). Call it on the worker's event loop:
    the transports (and the quota store, if the endpoints share one) open there."""
    requests = options.requests
    solo = len(endpoints) == 1 and endpoints[0].spec.models is None
    stores = {e.store for e in endpoints if e.store is not None}
    store: QuotaStore | None = None
    if stores:
        (spec_store,) = stores  # the run's one --quota-store
        store = await open_store(spec_store)
    pool = Pool(store=store)
    for endpoint in endpoints:
        spec = endpoint.spec
        provider = endpoint_provider(spec.provider, options, schema)
        target = Target(endpoint.options, provider)
        target.key_source = endpoint.key_source  # the driver's words for the key, in messages
        target.loopback_mock = endpoint.loopback_mock
        shared = endpoint.store is not None
        executor = route_executor(
            spec,
            target,
            target.transport(requests),
            options,
            clock,
            tally,
            prices,
            out,
            schema,
            _image_gates(endpoint.budget, options.media.ipm, clock),
            upload=False,  # files go inline from a cluster's workers (support.py refuses always)
        )
        lanes = Lanes(
            spec.limits,
            None,  # the budget (or the quota store) counts the day for the whole cluster
            clock,
            per_second=provider.per_second_limits,
            rolling=options.limits.quota_day == "rolling",
            where=target.where if solo else f"endpoint {spec.name} ({target.where})",
            max_outage=requests.max_outage,
            store=store if shared else None,
            account=spec_account(spec, target) if shared else None,
            gate=None if shared else _gates(endpoint.budget, clock, spec.name),
        )
        pool.add(spec, provider, executor, lanes, owned=True)
    return pool


def _gates(budget: Any, clock: Clock, endpoint: str) -> Callable[[str], Gate]:
    """Each model's gate on ``budget`` (a ``grants.Budget`` actor handle), counting the day's
    requests under ``endpoint``'s name."""

    async def ask(
        model: str, now: float, want: int, tokens: float, settle: float, back: GiveBack | None
    ) -> Grant:
        grant: Grant = await budget.grant.remote(model, now, want, tokens, settle, back, endpoint)
        return grant

    def tell(model: str, now: float, delay: float) -> None:
        budget.pause.remote(model, now, delay)

    return lambda model: Gate(model, ask, tell, clock)


def _image_gates(budget: Any, ipm: int | None, clock: Clock) -> Callable[[str], ImageAdmission]:
    """Each model's gate on ``budget``'s count of images per minute (``--ipm``)."""

    async def ask(model: str, now: float, n: int) -> float:
        wait: float = await budget.images.remote(model, now, n, ipm)
        return wait

    return lambda model: SharedImageGate(model, ask, clock)
