"""Pools: several endpoints (keys, projects, providers) serving a run's models at once; a run
without ``--pool`` is a pool of one endpoint, serving every model.

The endpoints come from a pool file (``_config.pool_file``). Each gets its own lanes (one per
model, sharing the project's budget through the quota store) and its own executor;
``PoolExecutor`` (``pool_executor``) sends each job through the lane that can send it soonest,
preferring a higher ``priority`` when several can send now, so a run's rate is the sum of its
endpoints' ceilings.

An endpoint that refuses the key or the model is disabled for that model, with a warning naming
it, and the job goes to another; one whose daily quota is spent, or that is down, is passed over
while another can send; the run stops (exit 4, 3, 75) only when no endpoint can serve the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

from .._admission.estimate import TokenEstimator
from .._admission.ipm import ImageAdmission
from .._admission.lane import Lane
from .._admission.lanes import Lanes
from .._admission.ledger import Ledger
from .._admission.quota import Account, MemoryStore, QuotaStore
from .._admission.retry import RetryPolicy
from .._config.options import RunOptions
from .._config.pool_file import EndpointSpec, spec_endpoint
from .._config.prices import Prices
from .._config.schema import OutputSchema
from .._core.clock import Clock
from .._core.errors import QuotaExhausted, UsageError
from .._rundir.uploads import UploadLog
from .._wire.endpoint import Target
from .._wire.providers import Provider, get_provider, is_embedder
from .._wire.providers._structured import SchemaProvider
from .._wire.transport import Transport
from .embed import PackLimits
from .execute import Executor
from .tally import Tally
from .uploads import Uploads

__all__ = ["Pool", "Route", "open_pool", "route_executor", "spec_account"]


def spec_account(spec: EndpointSpec, target: Target) -> Account:
    """Whose budget an endpoint spends: its project's if it names one, else its key's."""
    if spec.project is not None:
        return Account.of_project(spec.provider, spec.project)
    return Account.of_key(target.base_url, target.key, target.key_source)


@dataclass(eq=False)
class Route:
    """One endpoint at run time: its spec, lanes, executor and what it no longer serves."""

    spec: EndpointSpec
    provider: Provider
    lanes: Lanes
    executor: Executor
    owned: bool = True
    """Whether the pool starts and stops its endpoint (the runner owns the first one's)."""
    disabled: dict[str, str] = field(default_factory=dict)
    """Models this endpoint refused (bad key, unknown model), each with why, in words."""
    down: bool = False
    """The endpoint stayed unreachable past --max-outage."""

    def has(self, model: str) -> bool:
        """Whether the endpoint is one that serves ``model`` (refused or down, or not)."""
        return self.spec.models is None or model in self.spec.models

    def serves(self, model: str) -> bool:
        return self.has(model) and model not in self.disabled and not self.down

    def theirs(self, model: str) -> str:
        """The endpoint's own name for our ``model``."""
        return model if self.spec.models is None else self.spec.models[model]

    def lane(self, model: str) -> Lane:
        return self.lanes[self.theirs(model)]


class Pool:
    """The routes of a run: its endpoints, one for a run without ``--pool``."""

    def __init__(self, store: QuotaStore | None) -> None:
        self.routes: list[Route] = []
        self.store = store

    def add(
        self,
        spec: EndpointSpec,
        provider: Provider,
        executor: Executor,
        lanes: Lanes,
        *,
        owned: bool,
    ) -> None:
        self.routes.append(Route(spec, provider, lanes, executor, owned=owned))

    @property
    def solo(self) -> bool:
        """A run of one endpoint: its messages name the endpoint's URL, not a pool member."""
        return len(self.routes) == 1

    def stop(self) -> None:
        """Stop the embedded mock providers the pool's endpoints started."""
        for route in self.routes:
            if route.owned:
                route.executor.target.stop()

    async def aclose(self) -> None:
        """Close the connections of the endpoints the pool owns."""
        for route in self.routes:
            if route.owned:
                await route.executor.transport.aclose()

    def candidates(self, model: str) -> list[Route]:
        return [r for r in self.routes if r.serves(model)]

    def __getitem__(self, model: str) -> Lane:
        """A lane of ``model`` that is not stopped for the day if there is one (the scheduler
        passes a job over only when every endpoint's day is spent)."""
        routes = self.candidates(model) or [r for r in self.routes if r.has(model)]
        if not routes:
            raise UsageError(f"no endpoint of the pool serves model {model!r}")
        lanes = [r.lane(model) for r in routes]
        return next((lane for lane in lanes if lane.blocked() is None), lanes[0])

    def blocked(self, model: str) -> QuotaExhausted | None:
        """Why no endpoint can send ``model`` today, if none can."""
        if self.solo:
            return self.routes[0].lane(model).blocked()
        return self[model].blocked()

    def pack_limits(self, model: str) -> PackLimits:
        """What one embeddings request of ``model`` may carry on every endpoint serving it (the
        least of their wires' limits: a pack may go to any of them)."""
        routes = [r for r in self.routes if r.has(model)] or self.routes[:1]
        wires = [r.provider for r in routes if is_embedder(r.provider)]
        if not wires:
            return PackLimits(1)
        caps = [p.max_tokens for p in wires if p.max_tokens is not None]
        return PackLimits(min(p.max_inputs for p in wires), min(caps) if caps else None)

    def estimator(self, model: str) -> TokenEstimator:
        """What ``model``'s requests are estimated to take (its first lane's estimator)."""
        return self[model].estimator

    def pick(self, model: str, skip: Container[Route] = ()) -> Route | None:
        """The route that can send a request of ``model`` soonest; among those that can send
        within their next paced slot (no queue would form), the highest priority, then the
        shortest queue. ``skip``: routes that have just said they cannot."""
        if self.solo:
            route = self.routes[0]
            ok = route.serves(model) and route not in skip and route.lane(model).blocked() is None
            return route if ok else None
        best: tuple[float, int, int] | None = None
        chosen = None
        now: float | None = None  # one reading for every lane: a thread switch between two
        # readings (10 ms and more on a loaded machine) would otherwise outweigh the priority
        for route in self.candidates(model):
            lane = route.lane(model)
            if route in skip or lane.blocked() is not None:
                continue
            now = lane.clock.monotonic() if now is None else now
            wait = max(0.0, lane.eta(now) - now - lane.spacing())
            key = (wait, -route.spec.priority, lane.waiting)
            if best is None or key < best:
                best, chosen = key, route
        return chosen

    def every_lane(self) -> Iterator[Lane]:
        """Every endpoint's lanes made so far."""
        return iter([lane for r in self.routes for lane in r.lanes.by_model.values()])

    def worked(self, besides: str) -> list[str]:
        return sorted({m for r in self.routes for m in r.lanes.worked(besides)})

    def save(self) -> None:
        for route in self.routes:
            route.lanes.save()

    async def beat(self) -> None:
        for route in self.routes:
            await route.lanes.beat()

    async def close(self) -> None:
        for route in self.routes:
            await route.lanes.close()


def open_pool(
    specs: Sequence[EndpointSpec],
    *,
    first: tuple[Provider, Target, Transport],
    options: RunOptions,
    schema: OutputSchema | None,
    clock: Clock,
    tally: Tally,
    prices: Prices,
    out: Path,
    ledger: Ledger,
    store: QuotaStore,
    httpx_transport: httpx.AsyncBaseTransport | None,
) -> Pool:
    """The run's endpoints: those of a ``--pool`` file, or the one of the options (one spec
    with ``models=None``: a pool of one, serving every model, whose messages name its URL). Each
    gets its own lanes and executor; the first's provider, target (started) and transport are
    the runner's, ``first``; the others' are started here and owned by the pool."""
    opts = options
    solo = len(specs) == 1 and specs[0].models is None
    pool = Pool(store)
    mocks = MemoryStore()  # a pool's mock endpoints share budgets in this process only
    for i, spec in enumerate(specs):
        if i == 0:
            provider, target, transport = first
        else:
            provider = get_provider(spec.provider, opts.media.api, dimensions=opts.media.dimensions)
            if schema is not None:
                provider = SchemaProvider(provider, schema)
            target = Target(spec_endpoint(spec), provider)
            target.start()
            transport = target.transport(opts.requests, httpx_transport)
        requests = opts.requests
        executor = route_executor(spec, target, transport, opts, clock, tally, prices, out, schema)
        lanes = Lanes(
            spec.limits,
            ledger,
            clock,
            per_second=provider.per_second_limits,
            rolling=opts.limits.quota_day == "rolling",
            where=target.where if solo else f"endpoint {spec.name} ({target.where})",
            max_outage=requests.max_outage,
            store=mocks if target.is_mock and not solo else store,
            account=spec_account(spec, target),
            ledger_prefix="" if solo else f"{spec.name}/",
        )
        pool.add(spec, provider, executor, lanes, owned=i > 0)
    return pool


def route_executor(
    spec: EndpointSpec,
    target: Target,
    transport: Transport,
    options: RunOptions,
    clock: Clock,
    tally: Tally,
    prices: Prices,
    out: Path,
    schema: OutputSchema | None,
    image_gate: Callable[[str], ImageAdmission] | None = None,
    upload: bool = True,
) -> Executor:
    """The online executor of one endpoint of a run (a local run's or a cluster worker's);
    ``upload``: it may send files through the Files API (not yet on a cluster's workers)."""
    requests = options.requests
    return Executor(
        transport,
        target,
        RetryPolicy(max_attempts=requests.max_attempts, timeout=requests.timeout),
        clock,
        tally,
        prices=prices,
        out=out,
        schema=schema,
        endpoint=spec.name,
        ipm=options.media.ipm,
        image_gate=image_gate,
        uploads=route_uploads(target, transport, options, clock, out) if upload else None,
    )


def route_uploads(
    target: Target, transport: Transport, options: RunOptions, clock: Clock, out: Path
) -> Uploads | None:
    """What sends an endpoint's files through its Files API (``--upload``), or None."""
    if options.media.upload == "never" or options.media.api not in ("chat", "responses"):
        return None
    # whose files: the endpoint and a hash of its key (a rerun with another key uploads again)
    key = hashlib.sha256((target.key or "").encode()).hexdigest()[:16]
    account = f"{target.base_url} {key}"
    log = UploadLog(out)
    requests = options.requests
    # retried as a request is; no lane paces an upload's 429, so it waits its own delay
    policy = RetryPolicy(max_attempts=requests.max_attempts, timeout=requests.timeout, paced=False)
    mode = options.media.upload
    where = f"the Files API at {target.where}"
    return Uploads(
        mode,
        target.provider,
        transport,
        account,
        log,
        clock,
        policy,
        where,
        max_outage=requests.max_outage,
        api=options.media.api,
    )
