"""Pool files (``--pool FILE.toml``): the endpoints a run sends through at once, validated.

Each ``[[endpoint]]`` names its provider, URL or mock, the environment variable holding its key,
its project (endpoints naming the same project share its limits), its limits, the models it
serves (with its own name for each where it differs), its priority and its batch queue. Nothing
given for the run is ignored: ``--rpm/--tpm/--rpd`` apply beneath each endpoint's own limits, and
the options each endpoint sets for itself (provider, URL, key, mock, tier, limits file) are
refused with a pool.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._core.errors import UsageError
from .._jobs import ProviderName
from .limits import Limits, LimitTable, load_tiers
from .options import EndpointOptions, RunOptions, option_flag

__all__ = [
    "PER_ENDPOINT",
    "EndpointSpec",
    "pool_specs",
    "read_pool",
    "refuse_per_endpoint",
    "spec_endpoint",
]

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
