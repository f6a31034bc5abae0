"""A finished job's row, as the journal and the Parquet parts hold it, and the Arrow schema of the
results (with a ``parsed`` column of the run's output schema, when it has one, and an
``embedding`` column of one vector length, for a run of ``--endpoint embeddings``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Record", "embedding_type", "image_type", "result_schema"]


@dataclass(frozen=True, slots=True)
class Record:
    """One finished job, as it is written to the journal and to Parquet."""

    id: str
    status: str
    text: str | None
    input_tokens: int | None
    output_tokens: int | None
    attempts: int
    error: str | None
    error_kind: str | None
    model: str | None
    finish_reason: str | None
    latency_ms: float | None
    response: str | None
    source: str | None
    fingerprint: str | None = None
    """A hash of the request sent, to notice a job whose input changed since it finished."""
    finished_at: float | None = None
    """Wall-clock time the job finished, for the pace ``batcher status`` reports."""
    cost_usd: float | None = None
    """What the answer's tokens cost in US dollars (``_config.prices``); None if the model has no
    known price. An error row costs 0: a refused request is not billed."""
    via: str = "online"
    """How the job was answered: ``online`` (a request of its own) or ``batch`` (a line of a
    provider's batch)."""
    images: tuple[dict[str, Any], ...] = ()
    """Images answered, saved under DIR/images/: ``{path (relative to DIR), mime_type, bytes,
    sha256}`` each; empty for a text-only answer."""
    parsed: Any = None
    """The answer validated against the run's output schema, as its ``parsed`` column holds it
    (only runs with a schema have that column)."""
    endpoint: str | None = None
    """The name of the endpoint that answered: a pool's endpoint, or ``default``."""
    embedding: Sequence[float] | None = None
    """The vector answered (``--endpoint embeddings``; float32, an ``array`` from the answer on),
    as its ``embedding`` column holds it (only embedding runs have that column)."""

    def to_dict(self) -> dict[str, Any]:
        """The record as a journal line's object (``asdict`` without its deep copies)."""
        return {name: getattr(self, name) for name in _RECORD_FIELDS}


_RECORD_FIELDS = tuple(f.name for f in fields(Record))


def result_schema(parsed: Any = None, dimensions: int | None = None) -> Any:
    """The Arrow schema of the results; ``parsed`` is the Arrow type of the ``parsed`` column,
    for a run with an output schema (``OutputSchema.arrow_type``); ``dimensions`` the length of
    the ``embedding`` column's vectors, for a run of embeddings."""
    import pyarrow as pa

    columns = [
        ("id", pa.string()),
        ("status", pa.string()),
        ("text", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("attempts", pa.int32()),
        ("error", pa.string()),
        ("error_kind", pa.string()),
        ("model", pa.string()),
        ("finish_reason", pa.string()),
        ("latency_ms", pa.float64()),
        ("response", pa.string()),
        ("source", pa.string()),
        ("fingerprint", pa.string()),
        ("finished_at", pa.float64()),
        ("cost_usd", pa.float64()),
        ("via", pa.string()),
        ("images", pa.list_(image_type())),
        ("endpoint", pa.string()),
    ]
    if parsed is not None:
        columns.append(("parsed", parsed))
    if dimensions is not None:
        columns.append(("embedding", embedding_type(dimensions)))
    return pa.schema(columns)


def embedding_type(dimensions: int) -> Any:
    """``fixed_size_list<float32>[dimensions]``: what vector stores and Arrow readers take
    without a copy (a flat buffer of floats, one stride a row)."""
    import pyarrow as pa

    return pa.list_(pa.float32(), dimensions)


def image_type() -> Any:
    import pyarrow as pa

    return pa.struct(
        [
            ("path", pa.string()),
            ("mime_type", pa.string()),
            ("bytes", pa.int64()),
            ("sha256", pa.string()),
        ]
    )
