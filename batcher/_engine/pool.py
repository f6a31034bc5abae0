"""Pools: several endpoints (keys, projects, providers) serving a run's models at once.

A pool file (``--pool FILE.toml``) lists endpoints, each with its key, its project (endpoints
naming the same project share its limits), its limits and the models it serves, with its own name
for each where it differs. Each endpoint gets its own lanes (one per model, sharing the project's
budget through the quota store) and its own executor; ``PoolExecutor`` sends each job through the
lane that can send it soonest, preferring a higher ``priority`` when several can send now, so a
run's rate is the sum of its endpoints' ceilings.

An endpoint that refuses the key or the model is disabled for that model, with a warning naming
it, and the job goes to another; one whose daily quota is spent, or that is down, is passed over
while another can send; the run stops (exit 4, 3, 75) only when no endpoint can serve the model.

Nothing given for the run is ignored: its ``--rpm/--tpm/--rpd`` apply beneath each endpoint's own
limits, and the options each endpoint sets for itself (provider, URL, key, mock, tier, limits file)
are refused with a pool.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._admission.estimate import TokenEstimator
from .._admission.lane import Lane
from .._admission.lanes import Lanes
from .._admission.quota import Account, QuotaStore
from .._config.limits import Limits, LimitTable, load_tiers
from .._config.options import EndpointOptions, RunOptions, option_flag
from .._core.errors import FatalProviderError, QuotaExhausted, UsageError
from .._jobs import Job, ProviderName
from .._rundir.store import Record
from .._wire.endpoint import Target
from .._wire.providers import Provider, job_fingerprint
from .execute import Executor, explain
from .outcome import Deferred, Done, Fatal, Halted, Outcome

__all__ = [
    "PER_ENDPOINT",
    "EndpointSpec",
    "Pool",
    "PoolExecutor",
    "Route",
    "pool_specs",
    "read_pool",
    "refuse_per_endpoint",
    "spec_account",
    "spec_endpoint",
]

log = logging.getLogger("batcher")

_KEYS = {
    "name",
    "provider",
    "base_url",
    "key_env",
    "mock",
    "project",
    "tier",
    "rpm",
    "tpm",
    "rpd",
    "limits",
    "models",
    "priority",
    "batch_queue_tokens",
}


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint of a pool file, validated."""

    name: str
    provider: ProviderName
    models: dict[str, str] | None
    """Our name of each model it serves -> its own name for it; None: every model, by our name
    (the one endpoint of a run without ``--pool``)."""
    base_url: str | None = None
    key_env: str | None = None
    mock: str | None = None
    project: str | None = None
    limits: LimitTable = field(default_factory=LimitTable)
    priority: int = 0
    batch_queue_tokens: int | None = None
    """Input tokens its batch queue may hold per model (else ``--batch-queue-tokens``)."""


PER_ENDPOINT = {
    "provider": "provider",
    "base_url": "base_url",
    "api_key": "key_env",
    "api_key_env": "key_env",
    "mock": "mock",
    "tier": "tier",
    "limits_file": "limits",
}
"""The run's options each endpoint of a pool file sets for itself (option -> its key there): given
with a pool, they would be ignored, so they are refused. ``rpm``, ``tpm`` and ``rpd`` are not: they
apply beneath every endpoint's own limits."""


def refuse_per_endpoint(given: Iterable[str]) -> None:
    """``UsageError`` naming each of ``given`` (``PER_ENDPOINT``'s options) and the pool file's
    keys to use instead, if there are any."""
    names = list(given)
    if names:
        flags = ", ".join(option_flag(name) for name in names)
        keys = ", ".join(dict.fromkeys(PER_ENDPOINT[name] for name in names))
        raise UsageError(
            f"{flags} cannot be used with {option_flag('pool_file')}: each [[endpoint]] of the "
            f"pool file sets its own ({keys})"
        )


def pool_specs(path: Path, options: RunOptions) -> list[EndpointSpec]:
    """The endpoints of the pool file ``path``, with the run's ``rpm``, ``tpm`` and ``rpd``
    beneath each endpoint's own limits (a limit an endpoint sets, by its tier, for every model or
    for one, wins); ``UsageError`` first for an option of ``options`` (not its default) that the
    endpoints set for themselves."""
    flat, default = options.flat(), RunOptions().flat()
    refuse_per_endpoint(name for name in PER_ENDPOINT if flat[name] != default[name])
    lim = options.limits
    base = Limits(rpm=lim.rpm, tpm=lim.tpm, rpd=lim.rpd)
    return [replace(spec, limits=spec.limits.under(base)) for spec in read_pool(path)]


def read_pool(path: Path) -> list[EndpointSpec]:
    """The endpoints of a pool file; ``UsageError`` naming the file and the field if bad."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--pool {path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--pool {path}: not valid TOML: {e}") from None
    unknown = set(data) - {"endpoint"}
    if unknown:
        raise UsageError(f"--pool {path}: unknown key(s) {sorted(unknown)}; use [[endpoint]]")
    raw = data.get("endpoint")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"--pool {path}: no [[endpoint]] tables")
    specs = [_endpoint(path, i, e) for i, e in enumerate(raw)]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"--pool {path}: two endpoints are named {name!r}")
    return specs


def _endpoint(path: Path, i: int, raw: Any) -> EndpointSpec:
    where = f"--pool {path}: endpoint {i + 1}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a table")
    if isinstance(raw.get("name"), str):
        where += f" ({raw['name']})"

    def bad(key: str, what: str) -> UsageError:
        return UsageError(f"{where}: {key}: {what}")

    unknown = set(raw) - _KEYS
    if unknown:
        raise bad(sorted(unknown)[0], f"unknown key; use {', '.join(sorted(_KEYS))}")
    for key in ("name", "provider", "base_url", "key_env", "mock", "project", "tier"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise bad(key, f"must be a non-empty string, got {raw[key]!r}")
    if "name" not in raw:
        raise bad("name", "missing")
    provider = raw.get("provider", "openai")
    if provider not in ("openai", "gemini"):
        raise bad("provider", f"{provider!r} is unknown; choose openai or gemini")
    key_env = raw.get("key_env")
    if key_env is None and "mock" not in raw:
        raise bad("key_env", "missing (the environment variable holding the key)")
    if key_env is not None and not os.environ.get(key_env):
        raise bad("key_env", f"${key_env} is not set")
    if "mock" in raw and "base_url" in raw:
        raise bad("mock", "cannot be given with base_url")
    if "base_url" in raw:
        try:
            EndpointOptions(base_url=raw["base_url"])
        except UsageError as e:
            raise bad("base_url", str(e)) from None
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise bad("priority", f"must be an integer, got {priority!r}")
    queue = raw.get("batch_queue_tokens")
    if queue is not None and (isinstance(queue, bool) or not isinstance(queue, int) or queue < 1):
        raise bad("batch_queue_tokens", f"must be an integer >= 1, got {queue!r}")
    return EndpointSpec(
        name=raw["name"],
        provider=provider,
        models=_models(raw.get("models"), bad),
        base_url=raw.get("base_url"),
        key_env=key_env,
        mock=raw.get("mock"),
        project=raw.get("project"),
        limits=_limit_table(raw, bad),
        priority=priority,
        batch_queue_tokens=queue,
    )


def _models(raw: Any, bad: Any) -> dict[str, str]:
    if isinstance(raw, list) and raw and all(isinstance(m, str) and m for m in raw):
        return {m: m for m in raw}
    if isinstance(raw, dict) and raw and all(isinstance(v, str) and v for v in raw.values()):
        return dict(raw)
    raise bad("models", "a list of model names, or a table of our name = its name")


def _limit_table(raw: dict[str, Any], bad: Any) -> LimitTable:
    tier = None
    if "tier" in raw:
        tiers = load_tiers()[2]
        if raw["tier"] not in tiers:
            raise bad("tier", f"unknown tier {raw['tier']!r}; choose one of {', '.join(tiers)}")
        tier = tiers[raw["tier"]]
    flat = {}
    for key in ("rpm", "tpm", "rpd"):
        value = raw.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise bad(key, f"must be an integer >= 1, got {value!r}")
        flat[key] = value
    per_model = None
    if "limits" in raw:
        table = raw["limits"]
        if not isinstance(table, dict):
            raise bad("limits", "a table of models, each a table of rpm / tpm / rpd")
        per_model = {}
        for model, lim in table.items():
            if not isinstance(lim, dict) or set(lim) - {"rpm", "tpm", "rpd"}:
                raise bad(f"limits.{model}", "a table of rpm / tpm / rpd")
            for k, v in lim.items():
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise bad(f"limits.{model}.{k}", f"must be an integer >= 1, got {v!r}")
            per_model[model] = Limits(**lim)
    return LimitTable(tier, Limits(**flat), per_model)


def spec_endpoint(spec: EndpointSpec) -> EndpointOptions:
    """Where an endpoint of the pool sends, as a run's ``EndpointOptions`` option group."""
    return EndpointOptions(
        provider=spec.provider, base_url=spec.base_url, api_key_env=spec.key_env, mock=spec.mock
    )


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
                self._disable(route, model, outcome.error, refusals)
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
        if self.pool.solo and model in self.pool.routes[0].disabled:
            route = self.pool.routes[0]
            return Fatal(FatalProviderError(route.disabled[model]), model)
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
    ) -> None:
        worked = self.pool.worked(besides=model) if self.pool.solo else []
        why = explain(error, model, route.executor.target, worked)
        refusals.append(f"endpoint {route.spec.name}: {why}")
        if model not in route.disabled:  # jobs that were waiting on it say nothing new
            route.disabled[model] = why
            if not self.pool.solo:
                log.warning("endpoint %s no longer serves %s: %s", route.spec.name, model, why)

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
