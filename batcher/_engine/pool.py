"""Pools: several endpoints (keys, projects, providers) serving a run's models at once; a run
without ``--pool`` is a pool of one endpoint, serving every model.

The endpoints come from a pool file (``_config.pool_file``). Each gets its own lanes (one per
model, sharing the project's budget through the quota store) and its own executor;
``PoolExecutor`` sends each job through the lane that can send it soonest, preferring a higher
``priority`` when several can send now, so a run's rate is the sum of its endpoints' ceilings.

An endpoint that refuses the key or the model is disabled for that model, with a warning naming
it, and the job goes to another; one whose daily quota is spent, or that is down, is passed over
while another can send; the run stops (exit 4, 3, 75) only when no endpoint can serve the model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from .._core.errors import FatalProviderError, NetworkRefused, QuotaExhausted, UsageError
from .._jobs import Job
from .._rundir.rows import Record
from .._rundir.uploads import UploadLog
from .._wire.endpoint import Target
from .._wire.providers import Provider, get_provider, is_embedder, job_fingerprint
from .._wire.providers._structured import SchemaProvider
from .._wire.transport import Transport
from .embed import PackLimits, send_pack
from .execute import Executor, explain
from .outcome import Deferred, Done, Fatal, Halted, Outcome
from .tally import Tally
from .uploads import Uploads

__all__ = ["Pool", "PoolExecutor", "Route", "open_pool", "route_executor", "spec_account"]

log = logging.getLogger("batcher")


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
        for route in self.candidates(model):
            lane = route.lane(model)
            if route in skip or lane.blocked() is not None:
                continue
            now = lane.clock.monotonic()
            wait = max(0.0, lane.eta() - now - lane.spacing())
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


class PoolExecutor:
    """Sends each job through the pool's best route; moves it on when an endpoint cannot serve
    it (refused, day spent, down) and another can."""

    def __init__(self, pool: Pool, fingerprint_provider: Provider) -> None:
        self.pool = pool
        self._fp_provider = fingerprint_provider

    @property
    def on_attempt(self) -> Any:
        return self.pool.routes[0].executor.on_attempt

    @on_attempt.setter
    def on_attempt(self, hook: Any) -> None:
        for route in self.pool.routes:
            route.executor.on_attempt = hook

    def halt(self) -> None:
        for route in self.pool.routes:
            route.executor.halt()

    async def execute(self, job: Job) -> Outcome:
        """Send ``job`` through the route that can send it soonest, moving on while another
        route can serve its model."""
        model = job.model
        assert model is not None
        refusals: list[str] = []
        halted: Halted | None = None
        deferred: Deferred | None = None
        spent: list[Route] = []
        solo = self.pool.solo
        while (route := self.pool.pick(model, spent)) is not None:
            theirs = route.theirs(model)
            sent = job if theirs == model else replace(job, model=theirs)
            outcome = await route.executor.execute(sent, route.lane(model))
            if isinstance(outcome, Fatal):
                why = self._disable(route, model, outcome.error, refusals)
                if solo:  # the run's one endpoint refused: said as it is, of the same kind
                    e = outcome.error
                    kind = type(e) if isinstance(e, NetworkRefused) else FatalProviderError
                    return Fatal(kind(why, status=e.status, body=e.body), model)
            elif isinstance(outcome, Halted):
                route.down, halted = True, outcome
                if not solo:
                    log.warning(
                        "endpoint %s: %s; its jobs go to the others", route.spec.name, outcome.error
                    )
            elif isinstance(outcome, Deferred):
                spent.append(route)
                deferred = outcome
                if not solo:
                    log.info("endpoint %s: %s", route.spec.name, outcome.stop)
            elif isinstance(outcome, Done):
                return Done(self._as_asked(outcome.record, job, model, route))
            else:
                return outcome
        return self._none_left(model, refusals, halted, deferred)

    async def execute_pack(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Send embedding ``jobs`` (of one model) packed in one request through the route that
        can send it soonest; the jobs a route cannot serve (refused, day spent, down) move on
        together while another route can serve their model. An outcome per job, in order."""
        model = jobs[0].model
        assert model is not None
        outcomes: dict[int, Outcome] = {}
        pending = list(range(len(jobs)))
        refusals: list[str] = []
        halted: Halted | None = None
        deferred: Deferred | None = None
        spent: list[Route] = []
        solo = self.pool.solo
        while pending and (route := self.pool.pick(model, spent)) is not None:
            theirs = route.theirs(model)
            sent = [jobs[i] if theirs == model else replace(jobs[i], model=theirs) for i in pending]
            results = await send_pack(route.executor, sent, route.lane(model))
            again = []
            why: str | None = None  # the route's refusal, said once for the pack
            for i, outcome in zip(pending, results, strict=True):
                if isinstance(outcome, Done):
                    outcomes[i] = Done(self._as_asked(outcome.record, jobs[i], model, route))
                elif isinstance(outcome, Fatal):
                    if why is None:
                        why = self._disable(route, model, outcome.error, refusals)
                    if solo:
                        error = FatalProviderError(why, status=outcome.error.status)
                        outcomes[i] = Fatal(error, model)
                    else:
                        again.append(i)
                elif isinstance(outcome, Halted):
                    route.down, halted = True, outcome
                    again.append(i)
                elif isinstance(outcome, Deferred):
                    if route not in spent:
                        spent.append(route)
                    deferred = outcome
                    again.append(i)
                else:
                    outcomes[i] = outcome
            pending = again
        for i in pending:
            outcomes[i] = self._none_left(model, refusals, halted, deferred)
        return [outcomes[i] for i in range(len(jobs))]

    def _none_left(
        self, model: str, refusals: list[str], halted: Halted | None, deferred: Deferred | None
    ) -> Outcome:
        """Why no route can send ``model`` now: all spent for the day (wait for the earliest
        reset), or all refused or down (the run stops)."""
        stops = [r.lane(model).blocked() for r in self.pool.candidates(model)]
        spent = sorted((s for s in stops if s is not None), key=lambda s: s.resets_at)
        if spent:
            return Deferred(spent[0])
        if deferred is not None:
            return deferred
        if halted is not None and not refusals:
            return halted
        if self.pool.solo and model in self.pool.routes[0].disabled:  # refused to another job
            return Fatal(FatalProviderError(self.pool.routes[0].disabled[model]), model)
        # every endpoint's refusal, whichever job met it (another may have met one first)
        refused = [
            f"endpoint {r.spec.name}: {r.disabled[model]}"
            for r in self.pool.routes
            if model in r.disabled
        ]
        why = "; ".join(refused or refusals) or "refused by every endpoint"
        error = FatalProviderError(f"{model}: no endpoint of the pool can serve it: {why}")
        return Fatal(error, model)

    def _disable(
        self, route: Route, model: str, error: FatalProviderError, refusals: list[str]
    ) -> str:
        """Stop sending ``model`` to ``route``; say why, in words a user can act on."""
        worked = self.pool.worked(besides=model) if self.pool.solo else []
        why = explain(error, model, route.executor.target, worked)
        refusals.append(f"endpoint {route.spec.name}: {why}")
        if model not in route.disabled:  # jobs that were waiting on it say nothing new
            route.disabled[model] = why
            if not self.pool.solo:
                log.warning("endpoint %s no longer serves %s: %s", route.spec.name, model, why)
        return why

    def _as_asked(self, record: Record, job: Job, model: str, route: Route) -> Record:
        """The record as the run's first endpoint would have fingerprinted it (the job and our
        model name): a job answered by another endpoint than before is not a changed job. A
        model the endpoint calls by another name is priced by ours."""
        if route is self.pool.routes[0] and route.theirs(model) == model:
            return record  # sent as the first endpoint sends it: nothing to redo
        fp = job_fingerprint(self._fp_provider, job, model)
        cost = record.cost_usd
        if cost is None and record.status == "ok":
            cost = route.executor.prices.cost(model, record.input_tokens, record.output_tokens)
        return replace(record, fingerprint=fp, cost_usd=cost)


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
    return Uploads(options.media.upload, target.provider, transport, account, log, clock.time)
