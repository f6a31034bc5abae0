"""What the mock has seen: the counters served on ``GET /admin/stats``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MockState"]


@dataclass
class MockState:
    """What the mock has seen, read through ``GET /admin/stats``."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    """Answers by status code; a dropped connection counts as status 0."""
    by_model: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    dropped: int = 0
    truncated: int = 0
    timeline: dict[int, list[int]] = field(default_factory=dict)
    """Per wall-clock second: [accepted, rejected with 429]."""
    first_accepted: float | None = None
    last_accepted: float | None = None
    first_admitted: float | None = None
    last_admitted: float | None = None
    """When the limits let in the first and the last request accepted (before its latency): the
    rate the server admitted, which answer times do not blur."""
    batch_creates: list[str] = field(default_factory=list)
    """The tag of every batch created, in order (a tag twice is a chunk submitted twice)."""
    batch_lines: int = 0
    """Batch lines answered."""

    def record(
        self, status: int, now: float, model: str | None = None, *, admitted: float | None = None
    ) -> None:
        """Count one answer of ``status`` given at wall-clock ``now`` (to ``model`` if a 200),
        ``admitted`` by the limits then (before its latency)."""
        self.requests += 1
        self.by_status[status] += 1
        if status == 200:
            self.accepted += 1
            if model:
                self.by_model[model] += 1
            if self.first_accepted is None:
                self.first_accepted = now
            self.last_accepted = now
            if admitted is not None:
                if self.first_admitted is None or admitted < self.first_admitted:
                    self.first_admitted = admitted
                if self.last_admitted is None or admitted > self.last_admitted:
                    self.last_admitted = admitted
        else:
            self.rejected += 1
        if status in (200, 429):
            slot = self.timeline.get(int(now))
            if slot is None:
                slot = self.timeline[int(now)] = [0, 0]
            slot[status != 200] += 1

    def snapshot(self, timeline: bool = False) -> dict[str, Any]:
        """The counters as JSON-ready values; ``timeline`` adds the per-second counts."""
        extra = {"timeline": {str(k): v for k, v in self.timeline.items()}} if timeline else {}
        return {
            **extra,
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_model": dict(self.by_model),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "dropped": self.dropped,
            "truncated": self.truncated,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
            "first_admitted": self.first_admitted,
            "last_admitted": self.last_admitted,
            "batch_creates": list(self.batch_creates),
            "batch_lines": self.batch_lines,
        }
