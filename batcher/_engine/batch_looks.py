"""When to look at a provider batch: soon after its submission, then less and less often.

Right after the create call, ``FIRST_POLL`` seconds later, then at twice its age each time until
the gap reaches ``--poll-interval``, which it keeps; in ``auto``, a batch is also due at its
``--batch-deadline``, when it is cancelled and its jobs go online (see ``_engine.batchapi``).
What a look finds is recorded and logged when it changes (``note_state``), and shown by state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._config.cost_options import BatchOptions
from .._core.clock import Clock
from .._rundir.batchlog import BatchLog, Chunk
from .._wire.providers._batch import BatchInfo

__all__ = ["FIRST_POLL", "SLACK", "Looks", "Schedule", "note_state", "states_shown"]

log = logging.getLogger("batcher")

FIRST_POLL = 2.0
"""Seconds between the first looks at a batch: the gap then doubles up to ``poll_interval``."""

SLACK = 1e-3
"""Seconds early a look or a deadline may come due (a sleep may wake that much early)."""


@dataclass(slots=True)
class Looks:
    """When to read a batch's state (times of ``Clock.monotonic``)."""

    submitted: float
    since: float
    """Where the gaps between looks start doubling from: the submission, or the cancel."""
    next: float
    cancelled: bool = False

    def after_look(self, now: float, longest: float) -> None:
        """The look at ``now`` is done: the next comes its age later, from ``FIRST_POLL`` (or
        ``longest`` if shorter) up to ``longest``."""
        self.next = now + min(longest, max(FIRST_POLL, now - self.since))


class Schedule:
    """The looks of every open chunk's batch, by tag."""

    def __init__(self, clock: Clock, options: BatchOptions) -> None:
        self.clock = clock
        self.options = options
        self.by_tag: dict[str, Looks] = {}

    def submitted(self, chunk: Chunk) -> None:
        """``chunk``'s batch was just created: look at it now, then on the doubling gaps."""
        now = self.clock.monotonic()
        self.by_tag[chunk.tag] = Looks(submitted=now, since=now, next=now)

    def cancelled(self, chunk: Chunk) -> None:
        """``chunk``'s batch was just cancelled: look again soon, to collect what it kept."""
        looks = self.of(chunk)
        looks.cancelled = True
        looks.since = looks.next = self.clock.monotonic()

    def looked(self, chunk: Chunk) -> None:
        self.of(chunk).after_look(self.clock.monotonic(), self.options.poll_interval)

    def of(self, chunk: Chunk) -> Looks:
        """When to look at ``chunk``'s batch; one an earlier run submitted is looked at now."""
        looks = self.by_tag.get(chunk.tag)
        if looks is None:
            now = self.clock.monotonic()
            age = self.clock.time() - chunk.submitted if chunk.submitted is not None else 0.0
            looks = Looks(submitted=now - age, since=now - age, next=now)
            self.by_tag[chunk.tag] = looks
        return looks

    def due(self, chunk: Chunk) -> float:
        """When ``chunk`` must be looked at next (monotonic): its next look, or its deadline."""
        looks = self.of(chunk)
        if self.options.mode != "auto" or looks.cancelled:
            return looks.next
        return min(looks.next, looks.submitted + self.options.batch_deadline)

    def is_due(self, chunk: Chunk) -> bool:
        return self.due(chunk) <= self.clock.monotonic() + SLACK

    def late(self, chunk: Chunk) -> bool:
        """Whether ``chunk``'s batch is past ``--batch-deadline`` (in ``auto``)."""
        looks = self.of(chunk)
        if self.options.mode != "auto" or looks.cancelled:
            return False
        return self.clock.monotonic() + SLACK >= looks.submitted + self.options.batch_deadline

    def forget(self, closed: set[str]) -> None:
        for tag in closed & set(self.by_tag):
            del self.by_tag[tag]


def states_shown(chunks: list[Chunk]) -> str | None:
    """The open batches by state, as the progress display shows them."""
    states: dict[str, int] = {}
    for chunk in chunks:
        state = chunk.state or "submitted"
        states[state] = states.get(state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in states.items()) or None


def note_state(log_: BatchLog, chunk: Chunk, info: BatchInfo, now: float) -> None:
    """Record and log a batch's state and counts when they change."""
    counts = (info.total, info.succeeded, info.failed)
    if (info.state, counts) != (chunk.state, chunk.counts):
        done = f", {info.succeeded or 0} ok / {info.failed or 0} failed of {info.total}"
        log.info("batch %s: %s%s", info.id, info.state, done if info.total else "")
        log_.state(chunk, info.state, counts, now)
