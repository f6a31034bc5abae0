"""``--budget``: what a run directory may spend, checked before each job is sent.

The spend counts three things: the cost of the results already in the directory (earlier runs
into it included), the answers of this run, and a reservation for every job in flight at its worst
case: the estimated input tokens (and a margin) plus ``max_tokens`` (or, without one, the longest
answer the model has given in this run, or ``UNKNOWN_OUTPUT`` before its first answer) at the
model's prices. A provider batch is reserved whole before it is created, at the batch price, and
settled when it is collected.
A job whose reservation would take the spend over the budget is not sent; the answer settles the
reservation to what it really cost. With ``max_tokens`` on every job the spend cannot pass the
budget (unless an answer's input was a quarter above its estimate); without it, an answer longer
than any before may.

On a cluster the workers share one ``Budget`` through ``SharedSpend`` (a Ray actor as it is): a
worker reserves each job there before sending it and settles it after, so the whole cluster spends
as one run would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .._config.prices import Prices
from .._core.errors import UsageError

__all__ = ["Budget", "Reservation", "SharedSpend", "unpriced"]

INPUT_MARGIN = 1.25
"""The input estimate is a fit, not a bound: a reservation counts a quarter more input tokens."""
UNKNOWN_OUTPUT = 4096
"""Output tokens assumed for a job without ``max_tokens`` before its model has answered once."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Dollars set aside for one job in flight."""

    model: str
    dollars: float


class Budget:
    """The spend of one run directory against its limit, in dollars."""

    def __init__(self, limit: float, spent: float, prices: Prices) -> None:
        self.limit = limit
        self.spent = spent
        """Dollars of finished results: the directory's before this run, plus this run's."""
        self.reserved = 0.0
        self.prices = prices
        self._longest: dict[str, int] = {}  # model -> longest output seen in this run

    def worst_case(
        self,
        model: str,
        input_tokens: int,
        max_tokens: int | Sequence[int | None] | None,
        *,
        batch: bool = False,
    ) -> float | None:
        """The most a job (or a batch: ``max_tokens`` one per job) can cost, at the batch price
        with ``batch``; None if the model has no known price."""
        price = self.prices.price(model)
        if price is None:
            return None
        each = max_tokens if isinstance(max_tokens, Sequence) else [max_tokens]
        longest = self._longest.get(model, UNKNOWN_OUTPUT)
        output = sum(m if m is not None else longest for m in each)
        return price.cost(math.ceil(input_tokens * INPUT_MARGIN), output, batch=batch)

    def reserve(
        self,
        model: str,
        input_tokens: int,
        max_tokens: int | Sequence[int | None] | None,
        *,
        batch: bool = False,
        force: bool = False,
    ) -> Reservation | None:
        """Set aside a job's (or a batch's) worst case, or None if that would take the spend over
        the limit (``force``: set it aside anyway, for a batch already submitted). ``KeyError`` if
        the model has no known price (nothing bounds its cost)."""
        worst = self.worst_case(model, input_tokens, max_tokens, batch=batch)
        if worst is None:
            raise KeyError(model)
        if not force and self.spent + self.reserved + worst > self.limit:
            return None
        self.reserved += worst
        return Reservation(model, worst)

    def settle(
        self, reservation: Reservation, cost: float | None, output_tokens: int | None = None
    ) -> None:
        """Replace a reservation by what the job cost (None or 0: nothing was billed), and learn
        the model's answer length from ``output_tokens``."""
        self.reserved = max(0.0, self.reserved - reservation.dollars)
        self.spent += cost or 0.0
        if output_tokens is not None:
            longest = self._longest.get(reservation.model, 0)
            self._longest[reservation.model] = max(longest, output_tokens)

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent)


def unpriced(model: str) -> UsageError:
    """Why a run under ``--budget`` stopped at a model without a known price."""
    return UsageError(
        f"--budget: no price is known for model {model!r}, so nothing bounds "
        "what its jobs cost; give its prices with --prices FILE (finished jobs are kept)"
    )


class SharedSpend:
    """One run directory's ``Budget`` shared by many workers (a cluster's): each reserves a job's
    worst case here before sending it and settles it after. The first job that does not fit (or
    whose model has no price) ends admission for every worker; what is in flight finishes. Its
    methods are async so that it runs as a Ray async actor as it is; none of them awaits, so each
    runs whole."""

    def __init__(self, limit: float, spent: float, prices: Prices) -> None:
        self.budget = Budget(limit, spent, prices)
        self.stop: str | None = None
        """Why admission ended at the budget, if it did."""
        self.unpriced: str | None = None
        """A model without a known price met under the budget: nothing bounds its cost."""

    async def reserve(
        self, model: str, input_tokens: int, max_tokens: int | None, what: str
    ) -> Reservation | None:
        """Set aside the worst case of ``what`` (a job), or None once admission has ended."""
        if self.stop is not None or self.unpriced is not None:
            return None
        try:
            reservation = self.budget.reserve(model, input_tokens, max_tokens)
        except KeyError:
            self.unpriced = model
            return None
        if reservation is None:
            self.stop = f"the next {what} could take the spend over the budget"
        return reservation

    async def settle(
        self, reservation: Reservation, cost: float | None, output_tokens: int | None
    ) -> None:
        """Replace a reservation by what its job cost (None: it was not answered)."""
        self.budget.settle(reservation, cost, output_tokens)

    async def stopped(self) -> tuple[str | None, str | None]:
        """Why admission ended at the budget, and the model without a price, if either."""
        return self.stop, self.unpriced
