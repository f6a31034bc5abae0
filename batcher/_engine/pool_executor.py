"""``PoolExecutor``: a job sent through the pool's best route (``Pool.pick``), moved on to another
endpoint when one cannot serve it (refused, its day spent, down), and the one outcome said when
none can: a deferral to the earliest reset, or the endpoints' refusals in words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .._core.errors import FatalProviderError, NetworkRefused
from .._jobs import Job
from .._rundir.rows import Record
from .._wire.providers import Provider, job_fingerprint
from .embed import send_pack
from .execute import explain
from .outcome import Deferred, Done, Fatal, Halted, Outcome
from .pool import Pool, Route

__all__ = ["PoolExecutor"]

log = logging.getLogger("batcher")


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
