"""The option groups of what a run pays: prices and the run directory's dollar budget
(``CostOptions``), and the providers' batch APIs at half the price (``BatchOptions``).
``RunOptions`` composes them."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Literal

from .._core.errors import BadOption
from .._core.flag import duration, flag
from .prices import Prices, load_prices

__all__ = ["BatchOptions", "CostOptions"]


def _dollars(text: str) -> float:
    """A ``--budget`` in US dollars: ``5``, ``2.50`` or ``$2.50``."""
    try:
        return float(text.strip().removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount of dollars: {text!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class CostOptions:
    """What tokens cost, and how much a run directory may spend."""

    prices_file: str | None = field(
        default=None,
        metadata=flag(
            "TOML file of prices per model (USD per million tokens), over the packaged ones",
            metavar="FILE",
            name="--prices",
        ),
    )
    budget: float | None = field(
        default=None,
        metadata=flag(
            "stop sending before the run directory's spend could pass USD (exit 5)",
            metavar="USD",
            parse=_dollars,
        ),
    )
    """Dollars this run directory may spend, counting earlier runs into it; None: no limit."""

    def __post_init__(self) -> None:
        if self.budget is not None and not 0 <= self.budget < math.inf:
            raise BadOption("budget", "must be a number of dollars, not negative")

    def prices(self) -> Prices:
        """The packaged prices with the ``prices_file``'s over them."""
        return load_prices(self.prices_file)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOptions:
    """Whether jobs go through the provider's batch API (half the price, within a day) and how."""

    mode: Literal["online", "batch", "auto"] = field(
        default="online",
        metadata=flag(
            "online requests (default); batch: the provider's batch API, half the price; auto: "
            "batches, with what is late or failed finished online",
            choices=("online", "batch", "auto"),
        ),
    )
    batch_deadline: float = field(
        default=6 * 3600.0,
        metadata=flag(
            "auto: jobs not answered this long after their batch was submitted are finished "
            "online, and the batch cancelled (default 6h)",
            metavar="DURATION",
            parse=duration,
        ),
    )
    """Seconds a batch may take in ``auto`` before its jobs are finished online."""
    batch_min: int = field(
        default=100,
        metadata=flag(
            "auto: fewer jobs left than this go online directly (default 100)", metavar="N"
        ),
    )
    no_wait: bool = field(
        default=False,
        metadata=flag(
            "submit the batches, record them and exit 6 without waiting; rerun the same command "
            "to collect"
        ),
    )
    cancel_batches: bool = field(
        default=False,
        metadata=flag(
            "cancel this directory's batches still running, keep what they finished, and stop"
        ),
    )
    batch_queue_tokens: int | None = field(
        default=None,
        metadata=flag(
            "input tokens enqueued in batches at once per model, at most (the tier's batch "
            "queue limit); further batches wait for earlier ones",
            metavar="N",
        ),
    )
    poll_interval: float = field(
        default=60.0,
        metadata=flag(
            "the longest gap between two looks at a running batch: looks start 2 s apart after "
            "its submission and double up to this (default 60s)",
            metavar="DURATION",
            parse=duration,
        ),
    )
    """The longest gap, in seconds, between two looks at a batch still running (the first
    looks are 2 s apart, the gaps doubling up to it)."""

    def __post_init__(self) -> None:
        if self.mode not in ("online", "batch", "auto"):
            raise BadOption("mode", f"{self.mode!r} is unknown; choose online, batch or auto")
        if not 0 < self.batch_deadline < math.inf:
            raise BadOption("batch_deadline", "must be a positive duration")
        if self.batch_min < 0:
            raise BadOption("batch_min", "must be 0 or more")
        if not 0 < self.poll_interval < math.inf:
            raise BadOption("poll_interval", "must be a positive duration")
        if self.batch_queue_tokens is not None and self.batch_queue_tokens < 1:
            raise BadOption("batch_queue_tokens", "must be at least 1")
