"""The one record builder: every way of answering a job gets its row, and its price, here."""

from __future__ import annotations

import pytest

from batcher import InvalidOutput, Job, PermanentJobError, Price, Prices, RetryableError
from batcher._core.completion import Completion
from batcher._engine.record import Answered, record_of

PRICES = Prices({"m": Price(input=1.0, output=2.0, batch=0.5)}, {})
JOB = Job.from_prompt("a", "hello")


def _redact(text: str | None) -> str | None:
    return None if text is None else text.replace("SECRET", "[API key]")


def _answer(model: str | None = None) -> Completion:
    return Completion(
        text="hi",
        finish_reason="stop",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        model=model,
        raw='{"echo": "SECRET"}',
    )


@pytest.mark.parametrize(("via", "cost"), [("online", 3.0), ("batch", 1.5)])
def test_an_answer_is_priced_online_or_at_the_batch_price(via: str, cost: float) -> None:
    how = Answered(attempts=2, latency_ms=5.0, fingerprint="fp", finished_at=1.0, via=via)
    row = record_of(JOB, "m", how, PRICES, _redact, completion=_answer())
    assert (row.status, row.text, row.cost_usd, row.via, row.attempts) == ("ok", "hi", cost, via, 2)
    assert row.response == '{"echo": "[API key]"}'  # no key in any row


def test_a_snapshot_the_answer_names_is_priced_as_its_known_model() -> None:
    how = Answered(attempts=1, latency_ms=1.0, fingerprint=None, finished_at=1.0)
    row = record_of(JOB, "m-unknown", how, PRICES, _redact, completion=_answer(model="m"))
    assert (row.model, row.cost_usd) == ("m", 3.0)
    row = record_of(JOB, "x", how, PRICES, _redact, completion=_answer(model="y"))
    assert row.cost_usd is None  # no price known: none guessed


def test_an_answer_that_did_not_fit_is_kept_as_a_billed_error_row() -> None:
    how = Answered(attempts=5, latency_ms=1.0, fingerprint=None, finished_at=1.0)
    error = InvalidOutput("$.x: field required (SECRET)", answer=_answer())
    row = record_of(JOB, "m", how, PRICES, _redact, error=error)
    assert (row.status, row.error_kind, row.text, row.cost_usd) == (
        "error",
        "invalid_output",
        "hi",
        3.0,
    )
    assert row.error == "$.x: field required ([API key])"


def test_an_error_costs_nothing_where_the_price_is_known_and_keeps_the_batch_line() -> None:
    how = Answered(attempts=1, latency_ms=1.0, fingerprint=None, finished_at=1.0, via="batch")
    error = PermanentJobError("bad request", status=400, body="{}")
    row = record_of(JOB, "m", how, PRICES, _redact, error=error, raw='{"line": 1}')
    assert (row.status, row.error, row.cost_usd, row.response) == (
        "error",
        "HTTP 400: bad request",
        0.0,
        '{"line": 1}',
    )
    unpriced = record_of(JOB, "x", how, PRICES, _redact, error=RetryableError("down"))
    assert (unpriced.cost_usd, unpriced.response) == (None, None)
