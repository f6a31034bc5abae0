"""The endpoints of a cluster run, on the driver: each started here (an embedded mock runs in the
driver, on 127.0.0.1) with the cluster-wide budget of its account, and handed to the workers as
``Endpoint`` values.

A run without ``--pool`` has one endpoint, its ``--endpoint`` options serving every model (a pool
of one, as a local run has); with ``--pool``, the pool file's. The lanes of an endpoint on every
worker draw on its account's budget (its project, else its key and URL): a named, detached async
actor (``_admission.grants.Budget``), made by the first driver that asks and found by the rest,
so endpoints of one project share it as they share a quota store on one machine. Each endpoint's
quota-day count is kept in ``DIR/ledger.json`` (under its name in a pool, as a local pool keeps
them) and counted in the quota store runs on the account share.

With ``--quota-store`` (a Redis URL, or ``local``: SQLite on each worker's machine), the workers'
lanes share each account's limits through that store instead, as a local run's do: clusters and
local runs on one project then draw on one budget. The embedded mock's budget stays the actor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._admission.grants import DEFAULT, Budget
from .._admission.ledger import DailyCount, Ledger
from .._admission.quota import Account
from .._config.options import EndpointOptions, RunOptions
from .._config.pool_file import EndpointSpec, pool_specs, spec_endpoint
from .._config.schema import OutputSchema
from .._engine.pool import spec_account
from .._jobs import ProviderName
from .._wire.endpoint import Target
from .._wire.providers import Provider, get_provider
from .._wire.providers._structured import SchemaProvider
from .cluster import NAMESPACE, import_ray

__all__ = ["Endpoint", "Endpoints", "budget", "endpoint_provider", "run_specs"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a worker needs to send through one endpoint of the run."""

    spec: EndpointSpec
    """Its name (the ``endpoint`` column), provider, models, limits and priority."""
    options: EndpointOptions
    """Where it sends: the URL the driver started or was given, and the key it resolved."""
    key_source: str
    """Where the key came from, for messages."""
    budget: Any
    """The cluster-wide budget of its account (a Ray actor handle, ``budget``)."""
    store: str | None = None
    """The quota store (``--quota-store``) its lanes share the account's limits through, in
    place of the budget's grants; None: the budget grants."""
    loopback_mock: bool = False
    """It is an embedded mock the driver runs on loopback: sent to directly, as a local run
    sends to its own, whatever proxy the environment names."""


def run_specs(options: RunOptions) -> tuple[list[EndpointSpec], bool]:
    """The run's endpoints: its pool file's, or its one endpoint (serving every model, with the
    run's limits), and whether it is that one (a run without ``--pool``)."""
    if options.pool.pool_file is not None:
        return pool_specs(Path(options.pool.pool_file), options), False
    spec = EndpointSpec(
        "default", options.endpoint.provider, models=None, limits=options.limits.table()
    )
    return [spec], True


def endpoint_provider(
    wire: ProviderName, options: RunOptions, schema: OutputSchema | None
) -> Provider:
    """The provider of an endpoint speaking ``wire``, asking for the run's schema if it has one."""
    provider = get_provider(wire, options.media.api)
    return provider if schema is None else SchemaProvider(provider, schema)


def budget(
    target: Target, options: RunOptions, out: Path | None = None, spec: EndpointSpec | None = None
) -> Any:
    """The cluster's budget for the account ``target`` spends (``spec``'s project, if a pool's
    endpoint names one, else its key and URL): a named, detached async actor, made by the first
    driver that asks and found by the rest. This run's limits (``spec``'s, else the options')
    replace the budget's; the day's counts in ``out``'s ledger (under ``spec``'s name) are taken
    for models it has not counted yet."""
    if spec is not None:
        account = spec_account(spec, target)
        limits = spec.limits
    else:
        account = Account.of_key(target.base_url, target.key, target.key_source)
        limits = options.limits.table()
    actor = (
        import_ray()
        .remote(Budget)
        .options(
            name=f"batcher-budget-{account.id[:16]}",
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
        )
        .remote(
            limits,
            per_second=target.provider.per_second_limits,
            rolling=options.limits.quota_day == "rolling",
        )
    )
    prefix = f"{spec.name}/" if spec is not None else ""
    saved: dict[str, Any] = dict(Ledger(out)._saved) if out is not None else {}
    days = {k.removeprefix(prefix): v for k, v in saved.items() if k.startswith(prefix)}
    name = spec.name if spec is not None else DEFAULT
    import_ray().get(actor.configure.remote(limits, days, name))
    return actor


class Endpoints:
    """The run's endpoints on the driver: their targets (started by ``start``, stopped by
    ``stop``), their budgets and what the workers get (``for_workers``), and what the budgets
    counted, kept in the ledger and the quota store (``keep_counts``)."""

    def __init__(self, options: RunOptions, schema: OutputSchema | None) -> None:
        self.options = options
        self.specs, self.solo = run_specs(options)
        self.targets = [
            Target(
                options.endpoint if self.solo else spec_endpoint(spec),
                endpoint_provider(spec.provider, options, schema),
            )
            for spec in self.specs
        ]
        self.budgets: list[Any] = []
        self._before: list[dict[str, int]] = []
        store = options.pool.quota_store
        self.store = None if store in (None, "memory") else store
        """The quota store the workers share each account's limits through (``--quota-store``
        given, and not ``memory``: one process's), else None (the budgets grant)."""

    @property
    def first(self) -> Target:
        """The first endpoint's target (the run's ``base_url`` in ``run.json``)."""
        return self.targets[0]

    @property
    def served(self) -> set[str] | None:
        """Every model the pool's endpoints serve; None for a run without ``--pool``."""
        return None if self.solo else {m for s in self.specs for m in s.models or ()}

    def start(self) -> None:
        """Start the embedded mocks among the endpoints (each on a port of 127.0.0.1)."""
        for target in self.targets:
            target.start()

    def for_workers(self, out: Path | None) -> list[Endpoint]:
        """Find or make the endpoints' budgets (``out``: the run directory, whose ledger has the
        day's counts); what the workers need to send through the endpoints, once started."""
        self.budgets = [
            budget(target, self.options, out, None if self.solo else spec)
            for spec, target in zip(self.specs, self.targets, strict=True)
        ]
        self._before = [
            _granted(actor, spec.name) for spec, actor in zip(self.specs, self.budgets, strict=True)
        ]
        endpoints = []
        for spec, target, actor in zip(self.specs, self.targets, self.budgets, strict=True):
            where = self.options.endpoint if self.solo else spec_endpoint(spec)
            sends = replace(where, base_url=target.base_url, api_key=target.key, mock=None)
            store = None if target.is_mock else self.store
            endpoints.append(
                Endpoint(spec, sends, target.key_source, actor, store, loopback_mock=target.is_mock)
            )
        return endpoints

    def stop(self) -> None:
        """Stop the embedded mocks."""
        for target in self.targets:
            target.stop()

    def keep_counts(self, out: Path) -> None:
        """Keep each endpoint's quota-day counts in ``out``'s ledger, as a local run does (under
        its name in a pool, even where endpoints share an account), and count this run's requests
        in the quota store runs on each account share, unless the workers counted them there as
        they sent (``--quota-store``)."""
        ray = import_ray()
        counts: dict[str, DailyCount] = {}
        for spec, target, actor, before in zip(
            self.specs, self.targets, self.budgets, self._before, strict=False
        ):
            prefix = "" if self.solo else f"{spec.name}/"
            for model, saved in ray.get(actor.days.remote(spec.name)).items():
                count = DailyCount(rolling="times" in saved, keep_times="times" in saved)
                count.restore(saved)
                counts[prefix + model] = count
            if target.is_mock or self.store is not None:
                continue  # the embedded mock spends no one's quota; a store counted as it went
            now = _granted(actor, spec.name)
            sent = {m: n - before.get(m, 0) for m, n in now.items()}
            _count_in_store(self.options, spec_account(spec, target), sent)
        Ledger(out).save(counts)


def _granted(actor: Any, endpoint: str) -> dict[str, int]:
    """Requests the budget has granted ``endpoint`` so far and not taken back (sent), per
    model."""
    counters: dict[str, tuple[int, int]] = import_ray().get(actor.counters.remote(endpoint))
    return {model: granted for model, (granted, _) in counters.items()}


def _count_in_store(options: RunOptions, account: Account, requests: dict[str, int]) -> None:
    """Count the cluster's requests of this run in the quota store runs on ``account`` share
    (``--quota-store``), so that ``batcher status`` and runs on the account see them."""
    import anyio

    from .._admission.quota import open_store
    from .._core.clock import quota_day

    if not any(n > 0 for n in requests.values()):
        return

    async def count() -> None:
        store = await open_store(options.pool.quota_store)
        try:
            day = quota_day(time.time()).isoformat()
            for model, n in requests.items():
                if n > 0:
                    await store.reserve(account, model, day, n, None)
        finally:
            await store.aclose()

    anyio.run(count, backend="asyncio")
