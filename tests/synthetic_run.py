"""A large finished run directory written straight to Parquet, for the readers' benchmark
(``benchmarks/memory.py``) and for the tests of reports over many rows: ``run.json``, the results
and the attempt log in parts of 5,000 rows, in the schemas a run writes, without sending anything.

The mix is a real night's: three models (one without a price) over a pool of two endpoints, answers
of 0.5-10 s, 429s and 503s retried, a few jobs ending in each kind of error, and one pause of half
an hour (an outage) in a run of hours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PART_ROWS", "SyntheticRun", "write_run"]

PART_ROWS = 5000
"""Rows per Parquet part, as a run compacts its journal segments."""
MODELS = ("gpt-4o-mini", "gpt-4o", "ft:gpt-4o-mini:acme")
MODEL_SHARE = (0.6, 0.3, 0.1)
PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)}
"""Dollars per million input and output tokens; the fine-tuned model has no known price."""
ENDPOINTS = ("first", "second")
HOSTS = {"first": "api.first.example:443", "second": "api.second.example:443"}
# how a job's requests went: (share, attempts before its last, (outcome, HTTP status) of each of
# them, the last one's, the job's error kind or None for ok)
FATES: tuple[
    tuple[float, tuple[tuple[str, int | None], ...], tuple[str, int | None], str | None], ...
] = (
    (0.940, (), ("ok", 200), None),
    (0.030, (("rate_limited", 429),), ("ok", 200), None),
    (0.012, (("retryable", 503),), ("ok", 200), None),
    (0.004, (("rate_limited", 429), ("retryable", 503)), ("ok", 200), None),
    (0.006, (), ("permanent", 400), "permanent"),
    (0.004, (("retryable", 503), ("retryable", 503)), ("retryable", 503), "retryable"),
    (0.002, (("timeout", None), ("timeout", None)), ("timeout", None), "timeout"),
    (0.002, (), ("invalid_output", 200), "invalid_output"),
)
ERRORS = {
    "permanent": 'HTTP 400: {"error": {"message": "Invalid prompt: job {i} was refused"}}',
    "retryable": "HTTP 503: the server is overloaded (3 attempts)",
    "timeout": "no answer within --timeout 120 s (3 attempts)",
    "invalid_output": "the answer is not valid JSON: Expecting value: line 1 column 1 (char 0)",
    "rate_limited": "HTTP 429: Rate limit reached for requests",
}
_TEXT = (
    "the batch of prompts went through the lanes at the pace of the tier while answers came back "
    "from the model with tokens counted and costs summed for every job in the night run over many "
    "hours of steady work across endpoints and models kept within limits"
)
_WORDS = _TEXT.split(" ")


@dataclass(frozen=True, slots=True)
class SyntheticRun:
    """What was written: the directory, its jobs and requests."""

    out: Path
    jobs: int
    attempts: int
    start: float
    end: float


def _paragraphs(rng: np.random.Generator, n: int = 997) -> list[str]:
    """``n`` answers of 40-90 words, to vary the text column as real answers do."""
    return [
        " ".join(rng.choice(_WORDS, size=int(rng.integers(40, 90)))).capitalize() + "."
        for _ in range(n)
    ]


def write_run(
    out: Path, n: int, *, seed: int = 0, rpm: int = 1000, start: float = 1_780_000_000.0
) -> SyntheticRun:
    """Write a finished run of ``n`` jobs into ``out`` (which must not hold one), sent at about
    ``rpm`` requests a minute from ``start``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batcher._rundir.attempts import attempt_schema
    from batcher._rundir.rows import result_schema

    rng = np.random.default_rng(seed)
    (out / "results").mkdir(parents=True)
    (out / "attempts").mkdir()
    model = rng.choice(len(MODELS), size=n, p=MODEL_SHARE)
    endpoint = rng.integers(0, len(ENDPOINTS), size=n)
    fate = rng.choice(len(FATES), size=n, p=[f[0] for f in FATES])
    # each job's first request at the run's pace, with one pause of half an hour at 40%
    first = start + np.arange(n) * 60.0 / rpm + rng.uniform(0, 0.5, size=n)
    first[int(n * 0.4) :] += 1800.0
    waited = rng.lognormal(np.log(40), 1.2, size=n)  # ms waited for the lane
    latency = rng.lognormal(np.log(2500), 0.5, size=n).clip(300, 60_000)  # ms to answer
    input_tokens = rng.integers(50, 500, size=n)
    output_tokens = rng.integers(100, 600, size=n)

    # the attempt log: every request of every job, in the order they ended
    a_job, a_try, a_sent, a_wait, a_lat, a_fate_step = [], [], [], [], [], []
    for k, (_, before, _last, _kind) in enumerate(FATES):
        jobs = np.flatnonzero(fate == k)
        sent = first[jobs].copy()
        for step in range(len(before) + 1):
            last = step == len(before)
            lat = latency[jobs] if last else rng.uniform(30, 400, size=len(jobs))
            a_job.append(jobs)
            a_try.append(np.full(len(jobs), step + 1))
            a_sent.append(sent.copy())
            a_wait.append(waited[jobs] if step == 0 else rng.uniform(1000, 8000, size=len(jobs)))
            a_lat.append(lat)
            a_fate_step.append(np.full(len(jobs), k * 8 + step))
            sent = sent + lat / 1000 + rng.uniform(1, 8, size=len(jobs))
    job = np.concatenate(a_job)
    attempt = np.concatenate(a_try)
    sent_at = np.concatenate(a_sent)
    a_waited = np.concatenate(a_wait)
    a_latency = np.concatenate(a_lat)
    fate_step = np.concatenate(a_fate_step)
    ended = sent_at + a_latency / 1000
    order = np.argsort(ended, kind="stable")
    job, attempt, sent_at, a_waited, a_latency, fate_step, ended = (
        x[order] for x in (job, attempt, sent_at, a_waited, a_latency, fate_step, ended)
    )
    finished = np.zeros(n)
    np.maximum.at(finished, job, ended)  # a job finished when its last request ended

    steps = {
        k * 8 + s: (*before, last)[s]
        for k, (_, before, last, _) in enumerate(FATES)
        for s in range(len(before) + 1)
    }
    a_schema = attempt_schema()
    for part, lo in enumerate(range(0, len(job), PART_ROWS), start=1):
        sl = slice(lo, lo + PART_ROWS)
        j, fs = job[sl], fate_step[sl].tolist()
        outcome = [steps[s][0] for s in fs]
        status = [steps[s][1] for s in fs]
        ok = np.array([o == "ok" for o in outcome])
        table = pa.table(
            {
                "job_id": [f"job-{i:07d}" for i in j.tolist()],
                "attempt": attempt[sl].astype(np.int32),
                "model": [MODELS[m] for m in model[j]],
                "endpoint": [ENDPOINTS[e] for e in endpoint[j]],
                "sent_at": sent_at[sl],
                "waited_ms": a_waited[sl],
                "latency_ms": a_latency[sl],
                "outcome": outcome,
                "http_status": pa.array(status, pa.int32()),
                "input_tokens": pa.array(np.where(ok, input_tokens[j], 0), mask=~ok),
                "output_tokens": pa.array(np.where(ok, output_tokens[j], 0), mask=~ok),
                "retry_after": pa.array([2.0 if s == 429 else None for s in status], pa.float64()),
                "error": [
                    None if o == "ok" else ERRORS[o].replace("{i}", str(i))
                    for o, i in zip(outcome, j.tolist(), strict=True)
                ],
                "host": [HOSTS[ENDPOINTS[e]] for e in endpoint[j]],
                "packed": pa.nulls(len(j), a_schema.field("packed").type),
            },
            schema=a_schema,
        )
        pq.write_table(table, out / "attempts" / f"part-{part:06d}.parquet")

    # the results, in the order the jobs finished
    texts = _paragraphs(rng)
    r_schema = result_schema()
    order = np.argsort(finished, kind="stable")
    tries = np.array([len(f[1]) + 1 for f in FATES])[fate]
    ok_fate = np.array([f[3] is None for f in FATES])
    price_in = np.array([PRICES.get(m, (np.nan, np.nan))[0] for m in MODELS])[model]
    price_out = np.array([PRICES.get(m, (np.nan, np.nan))[1] for m in MODELS])[model]
    # an answer's tokens at its model's price; an error costs 0; a model without a price, null
    cost = np.where(ok_fate[fate], (input_tokens * price_in + output_tokens * price_out) / 1e6, 0)
    cost = np.where(np.isnan(price_in), np.nan, cost)
    for part, lo in enumerate(range(0, n, PART_ROWS), start=1):
        j = order[lo : lo + PART_ROWS].tolist()
        kinds = [FATES[f][3] for f in fate[j]]
        ok = ok_fate[fate[j]]
        names = [MODELS[m] for m in model[j]]
        text = [
            f"Job {i}: {texts[i % len(texts)]}" if k is None else None
            for i, k in zip(j, kinds, strict=True)
        ]
        # the provider's answer as it came (its text is words, with nothing to escape)
        response = [
            None
            if t is None
            else f'{{"id": "chatcmpl-{i}", "object": "chat.completion", "model": "{m}", '
            f'"choices": [{{"index": 0, "message": {{"role": "assistant", "content": "{t}"}}, '
            f'"finish_reason": "stop"}}], "usage": {{"prompt_tokens": {a}, '
            f'"completion_tokens": {b}}}}}'
            for t, i, m, a, b in zip(
                text, j, names, input_tokens[j].tolist(), output_tokens[j].tolist(), strict=True
            )
        ]
        table = pa.table(
            {
                "id": [f"job-{i:07d}" for i in j],
                "status": ["ok" if k is None else "error" for k in kinds],
                "text": text,
                "input_tokens": pa.array(input_tokens[j], mask=~ok),
                "output_tokens": pa.array(output_tokens[j], mask=~ok),
                "attempts": tries[j].astype(np.int32),
                "error": [
                    None if k is None else ERRORS[k].replace("{i}", str(i))
                    for k, i in zip(kinds, j, strict=True)
                ],
                "error_kind": kinds,
                "model": names,
                "finish_reason": ["stop" if k is None else None for k in kinds],
                "latency_ms": latency[j],
                "response": response,
                "source": [f"jobs.jsonl:{i + 1}" for i in j],
                "fingerprint": [f"{(i * 2654435761) % 2**64:016x}" for i in j],
                "finished_at": finished[j],
                "cost_usd": pa.array(cost[j], mask=np.isnan(cost[j])),
                "via": ["online"] * len(j),
                "images": pa.array([[]] * len(j), r_schema.field("images").type),
                "endpoint": [ENDPOINTS[e] for e in endpoint[j]],
            },
            schema=r_schema,
        )
        pq.write_table(table, out / "results" / f"part-{part:06d}.parquet")

    limits = {"tier": None, "everywhere": {"rpm": rpm}, "per_model": {}}
    half = {"tier": None, "everywhere": {"rpm": rpm // 2, "tpm": rpm * 200}, "per_model": {}}
    manifest = {
        "provider": "openai",
        "model": None,
        "base_url": "https://api.first.example/v1",
        "total": n,
        "inputs": ["jobs.jsonl"],
        "quota_day": "pacific",
        "limits": limits,
        "endpoints": {name: half for name in ENDPOINTS},
    }
    (out / "run.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return SyntheticRun(out, n, len(job), float(sent_at.min()), float(finished.max()))
