"""Embedding jobs packed many to a request: how packs are made (``Packer``) and sent
(``send_pack``).

An embeddings endpoint takes many inputs in one request (OpenAI up to 2,048 and 300,000 tokens,
Gemini's ``batchEmbedContents`` 100), and its limits count a request as one request and its
tokens: under an RPM limit, N inputs a request is N times the throughput. The scheduler hands the
packs ``Packer`` makes to the pool; ``send_pack`` sends one through a lane as one request (its
tokens the sum of its inputs' estimates) and returns an outcome per job, each for the one consumer
to record, so a kill loses no more than a job sent alone would. A request refused for what it
holds (an input too long: HTTP 400) is split in halves and each sent again, down to the one input
at fault, which alone ends in an error row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .._admission.estimate import Features, features
from .._admission.lane import Lane
from .._core.completion import Completion
from .._core.errors import (
    PermanentJobError,
    ProviderError,
    RetryableError,
    TimedOut,
)
from .._jobs import Job
from .._rundir.rows import Record
from .._wire.providers import is_embedder, job_fingerprint, send
from .execute import Executor, Stopped
from .outcome import ABANDONED, Done, Outcome
from .record import Answered, record_of

__all__ = ["TOKEN_SHARE", "PackLimits", "Packer", "send_pack", "shares"]

TOKEN_SHARE = 0.9
"""The part of a request's token limit a pack is filled to, by cautious estimates: a tokenizer
unlike the estimate's rule must not take a pack over the limit (which would cost a split)."""


@dataclass(frozen=True, slots=True)
class PackLimits:
    """What one request of a model may carry: inputs, and tokens summed over them (None: no
    such limit)."""

    inputs: int
    tokens: int | None = None


class Packer:
    """Groups the jobs of a pass into packs, one open pack per model: a pack is handed out when
    the next job would take it over its model's count or token limit, or when it is full.
    ``limits`` gives a model's ``PackLimits``; ``estimate`` a job's tokens (cautious)."""

    def __init__(self, limits: Callable[[str], PackLimits], estimate: Callable[[Job], int]) -> None:
        self.limits = limits
        self.estimate = estimate
        self._open: dict[str, tuple[list[Job], int]] = {}  # model -> (its open pack, its tokens)

    def add(self, job: Job) -> list[list[Job]]:
        """Add ``job`` to its model's pack; the packs now ready to send (none, one or two)."""
        model = job.model
        assert model is not None
        limits = self.limits(model)
        tokens = self.estimate(job)
        cap = None if limits.tokens is None else int(limits.tokens * TOKEN_SHARE)
        ready = []
        pack, used = self._open.get(model, ([], 0))
        if pack and cap is not None and used + tokens > cap:
            ready.append(pack)
            pack, used = [], 0
        pack.append(job)
        used += tokens
        if len(pack) >= limits.inputs:
            ready.append(pack)
            self._open.pop(model, None)
        else:
            self._open[model] = (pack, used)
        return ready

    def flush(self) -> list[list[Job]]:
        """Every open pack (the pass is over)."""
        packs = [pack for pack, _ in self._open.values()]
        self._open.clear()
        return packs


def shares(total: int | None, weights: Sequence[float]) -> list[int | None]:
    """``total`` tokens shared out in proportion to ``weights`` (largest remainders), so that the
    shares add up to ``total`` exactly; all None if ``total`` is unknown. OpenAI reports one
    request's tokens only: each input's row gets its part by its text's length."""
    if total is None:
        return [None] * len(weights)
    whole = sum(weights)
    if whole <= 0:
        weights, whole = [1.0] * len(weights), float(len(weights))
    exact = [total * w / whole for w in weights]
    out = [int(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: out[i] - exact[i])
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return list(out)


def _summed(xs: Sequence[Features]) -> Features:
    """A pack's features: its inputs' summed (the estimate is linear in them)."""
    return (
        sum(x[0] for x in xs),
        sum(x[1] for x in xs),
        sum(x[2] for x in xs),
        sum(x[3] for x in xs),
    )


async def send_pack(ex: Executor, jobs: Sequence[Job], lane: Lane) -> list[Outcome]:
    """Send ``jobs`` (of one model, resolved) as one request through ``lane``, with retries;
    one outcome per job, in order. A request refused for what it holds is split (``_split``)."""
    if not jobs:
        return []
    outcomes, refused = await _send_once(ex, jobs, lane)
    if refused is None or len(jobs) == 1:
        return outcomes
    return await _split(ex, jobs, lane, refused, outcomes)


async def _split(
    ex: Executor,
    jobs: Sequence[Job],
    lane: Lane,
    refused: PermanentJobError,
    rows: list[Outcome],
) -> list[Outcome]:
    """``jobs`` were refused whole with ``refused`` (their error ``rows`` ready): send each half
    alone, and split again each half refused, down to the inputs at fault. One bad input costs
    about two requests a level. When both halves are refused as the whole was, the error may be
    the request's own (a parameter the model does not take: every input would fail alone too, at
    two requests an input); one input sent alone tells: refused alike, every row takes the error
    without more requests."""
    half = len(jobs) // 2
    parts = [jobs[:half], jobs[half:]]
    sent = [await _send_once(ex, part, lane) for part in parts]
    if len(jobs) > 2 and all(e is not None and e.message == refused.message for _, e in sent):
        probe, alike = await _send_once(ex, jobs[:1], lane)
        if alike is not None and alike.message == refused.message:
            return rows
        rest = await send_pack(ex, parts[0][1:], lane)
        return probe + rest + await _split_again(ex, parts[1], lane, sent[1])
    out: list[Outcome] = []
    for part, done in zip(parts, sent, strict=True):
        out += await _split_again(ex, part, lane, done)
    return out


async def _split_again(
    ex: Executor,
    jobs: Sequence[Job],
    lane: Lane,
    sent: tuple[list[Outcome], PermanentJobError | None],
) -> list[Outcome]:
    """A half's outcomes as sent, or split again if it was refused (and holds more than one)."""
    outcomes, refused = sent
    if refused is None or len(jobs) == 1:
        return outcomes
    return await _split(ex, jobs, lane, refused, outcomes)


async def _send_once(
    ex: Executor, jobs: Sequence[Job], lane: Lane
) -> tuple[list[Outcome], PermanentJobError | None]:
    """Send ``jobs`` as one request, with retries: an outcome per job, and the error if the
    request was refused for what it holds (each outcome then that error's row)."""
    if ex.halting:
        return [ABANDONED] * len(jobs), None
    model = jobs[0].model
    assert model is not None
    provider = ex.provider
    assert is_embedder(provider)  # the runner packs jobs only for an embeddings wire
    spec = provider.build_pack(jobs, model)
    xs = [features(job.text) for job in jobs]
    x = _summed(xs)
    first = jobs[0].id
    packed = [job.id for job in jobs] if len(jobs) > 1 else None  # the attempt log's ``packed``
    start = ex.clock.monotonic()
    attempts = 0
    sending = [False]

    async def attempt() -> Completion:
        nonlocal attempts
        if ex.halting:
            raise Stopped
        asked = ex.clock.monotonic()
        async with lane.request(x) as slot:
            attempts += 1
            ex.tally.requests += 1
            sending[0] = True
            sent = ex.clock.monotonic()
            try:
                answer = await send(
                    ex.transport,
                    provider,
                    spec,
                    slot.observe,
                    lambda: ex.count_resent(first, attempts, model, lane, sent, packed),
                )
                if len(answer.vectors) != len(jobs):
                    raise RetryableError(
                        f"{len(answer.vectors)} embeddings answered for {len(jobs)} inputs",
                        status=200,
                        unanswered=False,
                    )
            except ProviderError as e:
                if isinstance(e, TimedOut):
                    ex.tally.timeouts += 1
                ex.log_attempt(first, attempts, model, asked, sent, error=e, packed=packed)
                raise
            finally:
                sending[0] = False
            ex.log_attempt(first, attempts, model, asked, sent, answer=answer, packed=packed)
            slot.done(answer.input_tokens)
        return answer

    answer = await ex.attempts(attempt, sending, model)
    if isinstance(answer, ProviderError):
        rows: list[Outcome] = [
            Done(_record(ex, job, model, attempts, start, error=answer)) for job in jobs
        ]
        return rows, answer if isinstance(answer, PermanentJobError) else None
    if not isinstance(answer, Completion):
        return [answer] * len(jobs), None
    return _answered(ex, jobs, model, attempts, start, answer, xs, lane), None


def _answered(
    ex: Executor,
    jobs: Sequence[Job],
    model: str,
    attempts: int,
    start: float,
    answer: Completion,
    xs: Sequence[Features],
    lane: Lane,
) -> list[Outcome]:
    """Each job's row of a packed answer: its vector, its share of the request's tokens, and
    its cost; where the provider reports no tokens (Gemini), the cost of the estimated ones."""
    tokens = shares(answer.input_tokens, [x[1] + x[2] for x in xs])
    outcomes: list[Outcome] = []
    for job, vector, share, x in zip(jobs, answer.vectors, tokens, xs, strict=True):
        mine = replace(answer, input_tokens=share, vectors=(vector,))
        record = _record(ex, job, model, attempts, start, completion=mine)
        if share is None and ex.prices.price(model) is not None:
            record = replace(record, cost_usd=ex.prices.cost(model, lane.estimator.estimate(x), 0))
        outcomes.append(Done(record))
    return outcomes


def _record(
    ex: Executor,
    job: Job,
    model: str,
    attempts: int,
    start: float,
    *,
    completion: Completion | None = None,
    error: ProviderError | None = None,
) -> Record:
    """A job's row, fingerprinted as its own one-input request (whatever it was packed with);
    an answer's row keeps no response (its vector is in ``embedding``)."""
    how = Answered(
        attempts=attempts,
        latency_ms=(ex.clock.monotonic() - start) * 1000,
        fingerprint=job_fingerprint(ex.provider, job, model),
        finished_at=ex.clock.time(),
        endpoint=ex.endpoint,
    )
    raw = None if completion is not None else error.body if error is not None else None
    return record_of(
        job, model, how, ex.prices, ex.target.redact, completion=completion, error=error, raw=raw
    )
