"""Telling an outage from bad luck: when answers stop coming, probe instead of burning jobs.

A lane reports every attempt's fate here. Failures that say nothing came back (a refused or reset
connection, a timeout, a 5xx, a gateway's page) from several requests in a row mean the endpoint
is down: the lane then admits one probe at a time, at growing intervals, and opens up again on
the first answer. Any answer, whatever it says (a 400, a 429, an output that does not fit the
schema), shows the endpoint is up: such failures are the job's, within its attempts, however many
come in a row.
Failures during an outage are the endpoint's, not the job's, so they use up none of its attempts.
An outage longer than ``max_outage`` ends the run (``Outage``): finished jobs are kept.
"""

from __future__ import annotations

import logging

import anyio

from .._core.clock import Clock
from .._core.errors import Outage, RetryableError

__all__ = ["OutageWatch"]

log = logging.getLogger("batcher")

FAILURES_IN_A_ROW = 5
"""Failed attempts in a row, with no answer between them, that make an outage."""
FIRST_PROBE = 1.0
"""Seconds from the start of an outage to the first probe; each failed probe doubles the wait."""
LONGEST_PROBE_WAIT = 60.0


class OutageWatch:
    """The outage state of one lane's endpoint."""

    def __init__(self, clock: Clock, *, max_outage: float = 1800.0, where: str = "") -> None:
        self.clock = clock
        self.max_outage = max_outage
        self.where = where or "the endpoint"
        self.failures = 0
        self.since: float | None = None
        """When the failures in a row began, once they make an outage."""
        self.last_error = ""
        self._streak_start = 0.0
        self._probe_at = float("-inf")
        self._probe_wait = FIRST_PROBE
        self._probing = False
        self._probe_done = anyio.Event()

    @property
    def down(self) -> bool:
        return self.since is not None

    async def wait_for_probe(self) -> float:
        """In an outage, wait until no probe is out; return when the next may leave (-inf when
        the endpoint is up). Raises ``Outage`` once the outage has lasted too long."""
        while self.since is not None and self._probing:
            await self._probe_done.wait()
        if self.since is None:
            return float("-inf")
        lasted = self.clock.monotonic() - self.since
        if lasted > self.max_outage:
            raise Outage(self.where, lasted, self.last_error)
        return self._probe_at

    def admitted(self) -> bool:
        """A request is leaving; True if it is an outage's probe."""
        if self.since is None:
            return False
        self._probing = True
        return True

    def answered(self) -> None:
        """An answer came back (of any kind but a failure below): the endpoint is up."""
        if self.since is not None:
            log.warning(
                "%s answers again after %.0f s; going on at full pace",
                self.where,
                self.clock.monotonic() - self.since,
            )
            self.since = None
            self._end_probe()
        self.failures = 0
        self._probe_wait = FIRST_PROBE

    def failed(self, error: RetryableError) -> bool:
        """An attempt got no answer (``error.unanswered``). True if the lane is in an outage
        (now or from this failure on): then the failure is not the job's and costs no attempt."""
        now = self.clock.monotonic()
        self.last_error = error.message
        if self.failures == 0:
            self._streak_start = now
        self.failures += 1
        if self.since is not None:
            if self._probing:
                self._probe_at = now + self._probe_wait
                self._probe_wait = min(LONGEST_PROBE_WAIT, self._probe_wait * 2)
                self._end_probe()
            return True
        if self.failures >= FAILURES_IN_A_ROW:
            self.since = self._streak_start
            self._probe_at = now + FIRST_PROBE
            self._probe_wait = FIRST_PROBE * 2
            log.warning(
                "%s is not answering (%d failures in a row, last: %s); pausing, and probing with "
                "one request at a time until it is back",
                self.where,
                self.failures,
                error.message,
            )
            return True
        return False

    def released(self) -> None:
        """An admitted request ended without an answer or a failure (it was cancelled): if it
        was the probe, the next one may go."""
        if self._probing:
            self._end_probe()

    def _end_probe(self) -> None:
        self._probing = False
        self._probe_done.set()
        self._probe_done = anyio.Event()
