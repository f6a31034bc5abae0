"""A sliding window of weighted events: how many, and how much, in the last ``width`` seconds.

One structure for every "in the last minute / day" count: the lane's admissions (requests and
tokens, with the tokens corrected once an answer reports them), its recent answers, the rate shown
by the progress display, the mock provider's per-minute headers, and a rolling quota day.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """Events ``[time, weight]`` younger than ``width`` seconds, oldest first, with their total.

    An event leaves once ``now - width >= time``: a window is the half-open ``(now - width, now]``.
    Entries are mutable lists so that an event's weight can be corrected (``adjust``) later.
    """

    __slots__ = ("_events", "total", "width")

    def __init__(self, width: float) -> None:
        self.width = width
        self._events: deque[list[float]] = deque()
        self.total = 0.0

    def add(self, now: float, weight: float = 1.0) -> list[float]:
        """Record an event at ``now``; return its entry (for ``adjust``)."""
        entry = [now, weight]
        self._events.append(entry)
        self.total += weight
        return entry

    def expire(self, now: float) -> None:
        """Forget the events that are ``width`` or more seconds old at ``now``."""
        events, cutoff = self._events, now - self.width
        while events and events[0][0] <= cutoff:
            self.total -= events.popleft()[1]

    def hold(self, entry: list[float]) -> None:
        """Record ``entry`` (another window's, of a time no older than this one's newest): one
        event in two windows, one list, so a correction through either reaches both."""
        self._events.append(entry)
        self.total += entry[1]

    def reweigh(self, entry: list[float], weight: float, now: float) -> None:
        """The total as if ``entry`` weighed ``weight`` (while it is in the window), leaving the
        entry itself to ``adjust`` through the window that owns it."""
        self.expire(now)
        if entry[0] > now - self.width:
            self.total += weight - entry[1]

    def adjust(self, entry: list[float], weight: float, now: float) -> None:
        """Correct an event's weight; the total changes only while the event is in the window."""
        self.expire(now)
        if entry[0] > now - self.width:
            self.total += weight - entry[1]
        entry[1] = weight

    def newer_than(self, t: float) -> list[list[float]]:
        """The events after ``t``, oldest first (read from the newest end: cheap for recent t)."""
        out = []
        for entry in reversed(self._events):
            if entry[0] <= t:
                break
            out.append(entry)
        out.reverse()
        return out

    def drop_newest(self, n: int) -> None:
        """Forget the ``n`` newest events (taken back: they did not happen)."""
        for _ in range(min(n, len(self._events))):
            self.total -= self._events.pop()[1]

    def times(self) -> list[float]:
        """The events' times, oldest first."""
        return [e[0] for e in self._events]

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, i: int) -> list[float]:
        return self._events[i]

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self._events)
