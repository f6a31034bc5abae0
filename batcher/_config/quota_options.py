"""The option groups of quotas: the rate limits and daily quotas a run paces by
(``LimitOptions``), and where they are counted: per endpoint of a pool file, in a store shared
with the other runs on the same account (``PoolOptions``). ``RunOptions`` composes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._core.errors import BadOption
from .._core.flag import flag
from .limits import LimitTable

__all__ = ["LimitOptions", "PoolOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitOptions:
    """The rate limits to pace by, and what to do when a daily quota is spent."""

    tier: str | None = field(
        default=None, metadata=flag("tier preset of limits (batcher tiers)", metavar="NAME")
    )
    rpm: int | None = field(
        default=None, metadata=flag("requests per minute, for every model", metavar="N")
    )
    tpm: int | None = field(
        default=None, metadata=flag("tokens per minute, for every model", metavar="N")
    )
    rpd: int | None = field(
        default=None, metadata=flag("requests per quota day, for every model", metavar="N")
    )
    limits_file: str | None = field(
        default=None,
        metadata=flag("TOML file of limits per model", metavar="FILE", name="--limits"),
    )
    on_daily_limit: Literal["wait", "exit"] = field(
        default="wait",
        metadata=flag(
            "when a model's daily quota is spent: wait for the reset (default) or stop with exit 3",
            choices=("wait", "exit"),
        ),
    )
    """When a model's daily quota is spent: wait for the reset, or stop (exit 3)."""
    quota_day: Literal["pacific", "rolling"] = field(
        default="pacific",
        metadata=flag(
            "count RPD per day ending at midnight Pacific (default) or over 24 h",
            choices=("pacific", "rolling"),
        ),
    )
    """Count RPD per quota day ending at midnight America/Los_Angeles, or over a rolling 24 h."""

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "rpd"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BadOption(name, f"must be at least 1, got {value}")
        if self.on_daily_limit not in ("wait", "exit"):
            raise BadOption("on_daily_limit", "takes wait or exit")
        if self.quota_day not in ("pacific", "rolling"):
            raise BadOption("quota_day", "takes pacific or rolling")

    def table(self) -> LimitTable:
        """Resolve the tier, the flags and the limits file into every model's limits."""
        return LimitTable.build(
            tier=self.tier,
            rpm=self.rpm,
            tpm=self.tpm,
            rpd=self.rpd,
            limits_file=Path(self.limits_file) if self.limits_file is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolOptions:
    """The run's endpoints (a pool file), and where its quotas are counted, shared with the other
    runs on the same account."""

    pool_file: str | None = field(
        default=None,
        metadata=flag(
            "TOML file of endpoints to send through at once (keys, projects, providers; "
            "see README); each sets its own provider, URL, key, mock, tier and limits (those flags "
            "are refused with it); --rpm/--tpm/--rpd apply beneath each endpoint's own",
            metavar="FILE",
            name="--pool",
        ),
    )
    quota_store: str | None = field(
        default=None,
        metadata=flag(
            "where quotas shared between runs are kept: local (default: SQLite in "
            "$BATCHER_STATE_DIR, else ~/.cache/batcher), memory (this run only), or "
            "redis://HOST:PORT/DB (runs on several machines)",
            metavar="STORE",
        ),
    )

    def __post_init__(self) -> None:
        store = self.quota_store
        if store is not None and store not in ("local", "memory") and "://" not in store:
            raise BadOption("quota_store", f"{store!r}: use local, memory, or redis://HOST:PORT/DB")
