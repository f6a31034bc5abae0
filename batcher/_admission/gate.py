"""What a lane asks of capacity granted from outside its process: the ``Gate`` protocol.

A lane (``_admission.lane``) given a gate waits on it for each admission besides its own pacing,
and passes on what it learns; ``_admission.budget_gate.Gate`` is the one kept, drawing slots from
a cluster's shared budget.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Gate"]


class Gate(Protocol):
    """Capacity granted from outside the process (a cluster's shared budget, ``_admission.grants``).

    A gated lane still paces itself; each admission also waits for ``admit``, and what the lane
    learns (a 429's pause, the tokens an answer really cost) is passed on, so that every lane
    drawing on the same budget hears of it.
    """

    async def admit(self, tokens: int, waiting: int) -> None:
        """Wait for a granted slot for a request of ``tokens``; ``waiting`` requests queue here
        (so a grant can cover them all). Raises ``QuotaExhausted`` when the day's are spent."""
        ...

    def paused(self, delay: float) -> None:
        """A 429 paused this lane for ``delay`` seconds."""
        ...

    def settle(self, charged: float, actual: float) -> None:
        """A request charged ``charged`` tokens at admission really cost ``actual``."""
        ...

    async def flush(self) -> None:
        """Give back what was granted and not used, so only requests sent stay counted."""
        ...
