"""The attempt log: every request a run sends, as it went, in ``DIR/attempts/``.

Results say how each job ended; the attempt log says how it got there: every request with its
time, model, endpoint, how long it waited for its lane and for the answer, the HTTP status or the
kind of error (429s and retries included), and the tokens reported. ``batcher report`` draws from
it. It goes through the same journal-then-compact path as results (``JournalStore``), with its
journal in ``attempts/_journal/`` so that ``pyarrow.parquet.read_table("DIR/attempts")`` reads the
parts alone (pyarrow skips names starting with ``_``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .journal import JournalStore

__all__ = ["Attempt", "AttemptLog"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request sent for a job, and how it ended."""

    job_id: str
    attempt: int
    """1 for a job's first request in this run, 2 for its first retry, ..."""
    model: str
    endpoint: str
    """The endpoint's name, as in the results' ``endpoint`` column (``default`` outside a pool)."""
    sent_at: float
    """Wall-clock time the request left."""
    waited_ms: float
    """Time spent waiting for the lane's admission (pacing, a 429's pause), before sending."""
    latency_ms: float
    outcome: str
    """``ok``, or the error's kind: ``rate_limited``, ``retryable``, ``permanent``, ``fatal``,
    ``invalid_output``, or ``timeout``: no answer within ``--timeout`` after the request left, so
    the provider may have finished it and billed it all the same."""
    http_status: int | None
    """The answer's status; None when none came (a dropped connection, a timeout)."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    retry_after: float | None = None
    """The delay the server asked for, in seconds (429s)."""
    error: str | None = None
    host: str | None = None
    """The endpoint's host and port (never a key)."""
    packed: list[str] | None = None
    """A packed request's job ids (``--endpoint embeddings``), in the order sent, ``job_id``
    the first of them; None for a request of one job."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Attempt))


def attempt_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("job_id", pa.string()),
            ("attempt", pa.int32()),
            ("model", pa.string()),
            ("endpoint", pa.string()),
            ("sent_at", pa.float64()),
            ("waited_ms", pa.float64()),
            ("latency_ms", pa.float64()),
            ("outcome", pa.string()),
            ("http_status", pa.int32()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("retry_after", pa.float64()),
            ("error", pa.string()),
            ("host", pa.string()),
            ("packed", pa.list_(pa.string())),
        ]
    )


class AttemptLog(JournalStore):
    """Durable attempts of one output directory: ``attempts/_journal/`` into ``attempts/``."""

    def __init__(self, out: Path, *, segment_size: int = 5000) -> None:
        folder = out / "attempts"
        super().__init__(
            folder / "_journal",
            folder,
            folder / "_damaged",
            attempt_schema,
            required=("job_id", "model", "outcome"),
            segment_size=segment_size,
        )

    def append(self, attempt: Attempt) -> int | None:
        """Journal one attempt; return a segment number that is now ready to compact."""
        return self.append_row(attempt.to_dict())
