"""The one record builder: a finished job's row, however it was answered (an online request, a
batch line, a pool's endpoint), priced by the one cost function (``Prices.cost``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from .._config.prices import Prices
from .._core.completion import Completion
from .._core.errors import InvalidOutput, ProviderError
from .._jobs import Job
from .._rundir.rows import Record

__all__ = ["OWN", "Answered", "Sourced", "price", "record_of"]

OWN = object()
"""``record_of``'s ``raw`` default: the row keeps the answer's own text (or the error's body)."""


class Sourced(Protocol):
    """What a row needs of its job besides the answer: its id and where it was read."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Answered:
    """How a job was answered, beside what: the attempts it took, its latency, the request's
    fingerprint, when it finished, by which way (``via``: online or batch) and endpoint."""

    attempts: int
    latency_ms: float
    fingerprint: str | None
    finished_at: float
    via: str = "online"
    endpoint: str | None = None


def price(
    prices: Prices, model: str, completion: Completion, *, batch: bool = False
) -> float | None:
    """What ``completion`` cost: at ``model``'s price, else at the price of the model the answer
    names (a dated snapshot of a known model); None if neither is known."""
    cost = prices.cost(model, completion.input_tokens, completion.output_tokens, batch=batch)
    if cost is None and completion.model:
        cost = prices.cost(
            completion.model, completion.input_tokens, completion.output_tokens, batch=batch
        )
    return cost


def record_of(
    job: Job | Sourced,
    model: str,
    how: Answered,
    prices: Prices,
    redact: Callable[[str | None], str | None],
    *,
    completion: Completion | None = None,
    error: ProviderError | None = None,
    raw: str | object | None = OWN,
) -> Record:
    """The row of ``job`` sent as ``model``: ``completion`` answered it, or it failed with
    ``error``. ``raw`` is what the row keeps as its response when not the answer's own text (a
    batch line, or None). An answer that did not fit the schema is kept (it was billed) as an
    error row; an error row costs nothing where the model's price is known."""
    batch = how.via == "batch"
    common = {
        "id": job.id,
        "attempts": how.attempts,
        "latency_ms": how.latency_ms,
        "source": job.source,
        "fingerprint": how.fingerprint,
        "finished_at": how.finished_at,
        "via": how.via,
        "endpoint": how.endpoint,
    }
    if completion is not None:
        return Record(
            status="ok",
            text=completion.text,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            error=None,
            error_kind=None,
            model=completion.model or model,
            finish_reason=completion.finish_reason,
            response=redact(completion.raw if raw is OWN else raw),  # type: ignore[arg-type]
            cost_usd=price(prices, model, completion, batch=batch),
            parsed=completion.parsed,
            embedding=completion.vectors[0] if completion.vectors else None,
            **common,  # type: ignore[arg-type]
        )
    assert error is not None
    if isinstance(error, InvalidOutput) and error.answer is not None:
        row = record_of(job, model, how, prices, redact, completion=error.answer, raw=raw)
        return replace(row, status="error", error=redact(error.message), error_kind=error.kind)
    status = f"HTTP {error.status}: " if error.status and error.status != 200 else ""
    return Record(
        status="error",
        text=None,
        input_tokens=None,
        output_tokens=None,
        error=redact(f"{status}{error.message}"),
        error_kind=error.kind,
        model=model,
        finish_reason=None,
        response=redact(error.body if raw is OWN else raw),  # type: ignore[arg-type]
        cost_usd=0.0 if prices.price(model) is not None else None,
        **common,  # type: ignore[arg-type]
    )
