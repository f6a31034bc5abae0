"""Which failure a request is dealt: a marker in its prompt first, else a seeded random draw."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["Fault", "FaultDealer", "Faults"]


@dataclass(frozen=True, slots=True)
class Faults:
    """Seeded fault rates (each a share of requests) to rehearse failure.

    Besides these, a prompt (last user turn) containing ``[[fail:400]]`` always gets a 400, one
    containing ``[[flaky:N]]`` gets a 503 for its first N requests, a key starting with ``bad``
    is refused as invalid, and a model named ``no-such-...`` does not exist.
    """

    error_500: float = 0.0
    error_503: float = 0.0
    drop: float = 0.0
    """The connection closes half-way through the answer."""
    truncate: float = 0.0
    """A 200 whose JSON body is cut short."""
    slow: float = 0.0
    slow_ms: float = 5000.0

    def __post_init__(self) -> None:
        rates = (self.error_500, self.error_503, self.drop, self.truncate, self.slow)
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates are shares between 0 and 1, adding up to at most 1")


class Fault(Enum):
    """What goes wrong with one request."""

    INVALID = "400"
    INTERNAL = "500"
    UNAVAILABLE = "503"
    DROP = "drop"
    TRUNCATE = "truncate"
    SLOW = "slow"


_FLAKY = re.compile(r"\[\[flaky:(\d+)\]\]")
_FAIL = "[[fail:400]]"


class FaultDealer:
    """Deals each request its fault, if any; the random draws replay exactly for one seed.

    A marked prompt takes no random draw, so markers do not shift which request gets a random
    fault. ``[[flaky:N]]`` counts requests per prompt text for as long as the mock runs.
    """

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self._random = random.Random(seed)
        self._flaky_seen: dict[str, int] = {}
        # each fault's share, in draw order, leaving out those that never happen
        self._rates = tuple(
            (rate, fault)
            for rate, fault in (
                (faults.error_500, Fault.INTERNAL),
                (faults.error_503, Fault.UNAVAILABLE),
                (faults.drop, Fault.DROP),
                (faults.truncate, Fault.TRUNCATE),
                (faults.slow, Fault.SLOW),
            )
            if rate > 0
        )

    def deal(self, prompt: str) -> Fault | None:
        """The fault for a request whose last user turn is ``prompt``, or None."""
        if _FAIL in prompt:
            return Fault.INVALID
        if "[[flaky:" in prompt and (m := _FLAKY.search(prompt)):
            seen = self._flaky_seen.get(prompt, 0)
            self._flaky_seen[prompt] = seen + 1
            if seen < int(m.group(1)):
                return Fault.UNAVAILABLE
        r = self._random.random()
        for rate, fault in self._rates:
            if r < rate:
                return fault
            r -= rate
        return None
