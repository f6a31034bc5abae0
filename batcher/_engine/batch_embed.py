"""Embeddings through the providers' batch APIs: jobs packed into lines as a chunk is cut, and
each answered line split back into one line a job.

OpenAI's Batch API takes ``/v1/embeddings`` lines whose body is the online request, many inputs
to a line: a cut packs its jobs as the online ``Packer`` does (by count and estimated tokens, to
its endpoint's wire's limits), each pack one line keyed by its first job's id (``LinePacker``).
The cut's entries keep the lines' order, a pack's jobs together, so the k-th input line covers
the next n entries, n its inputs. Gemini's ``asyncBatchEmbedContent`` takes one input a line.

A finished batch's lines are read back against its input file (``split_lines``): each job of a
line gets its vector and its share of the line's tokens (by its text's length, as online), or
the line's error; where the provider reports no tokens (Gemini), its row costs its estimated
tokens at the batch price, as an online row costs them at the full one.

A pack refused for what it holds (an HTTP 400: an input too long, say) is handed back as
``Resend`` for each of its jobs. In ``batch`` mode they go into the next batch each alone on
its line, so a bad input costs one error row and the others one more batch round at the same
price (the tokens are billed by input, not by line); halving the pack as online does would take
up to eleven rounds of a batch each (each up to a day) for a pack of 2,048. In ``auto`` they go
online once the batches are collected, where ``send_pack`` splits them as it does any pack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from .._admission.estimate import Features, TokenEstimator, features
from .._core.errors import PermanentJobError, ProviderError, RetryableError
from .._jobs import Job
from .._rundir.chunk_files import Cut, Entry, input_file
from .._wire.providers import Provider, is_embedder
from .._wire.providers._batch import BatchAPI, BatchLine
from .._wire.transport import Reply
from .batch_chunks import BatchEndpoint
from .embed import Packer, PackLimits, shares

__all__ = ["LinePacker", "Resend", "split_lines"]


class Resend(RetryableError):
    """A line of many inputs refused for what it holds: each of its jobs goes again, alone on
    a line of a later batch (or online, in ``auto``)."""


class LinePacker:
    """The open pack of one cut of embeddings, for a batch API whose lines take many inputs:
    each job's entry goes into the cut as it comes, the pack's line once it is complete
    (``estimate``: a job's tokens, cautious, as online)."""

    def __init__(self, ep: BatchEndpoint, model: str, estimate: Callable[[Job], int]) -> None:
        provider = ep.provider
        assert is_embedder(provider)
        self.ep = ep
        self.model = model
        self.provider = provider
        limits = PackLimits(provider.max_inputs, provider.max_tokens)
        self.packer = Packer(lambda _: limits, estimate)

    def add(
        self, cut: Cut, job: Job, entry: Entry, line: bytes, size: int, tokens: int, *, alone: bool
    ) -> None:
        """Add ``job`` to the pack (``line``, ``size``: its own one-input line, which the cut
        counts: a pack's line is shorter than its jobs' own); ``alone``: on that line of its own,
        the open pack's line written first so that the entries keep the lines' order."""
        if alone:
            self.flush(cut)
            cut.add(entry, line, size, tokens)
            return
        ready = self.packer.add(job)
        cut.add(entry, None, size, tokens)
        for pack in ready:
            cut.line(self._line(pack))

    def flush(self, cut: Cut) -> None:
        """Write the open pack's line (the cut is complete, or a job goes alone)."""
        for pack in self.packer.flush():
            cut.line(self._line(pack))

    def _line(self, jobs: Sequence[Job]) -> bytes:
        spec = self.provider.build_pack(jobs, self.ep.route.theirs(self.model))
        return self.ep.api.line(jobs[0].id, spec)


def split_lines(
    api: BatchAPI,
    provider: Provider,
    folder: Path,
    entries: Sequence[Entry],
    lines: Iterable[BatchLine],
    estimator: TokenEstimator,
) -> Iterator[BatchLine]:
    """The answered ``lines`` of an embeddings batch as one line a job: each line matched to
    the entries it covers by its key, from the chunk's input file in ``folder``."""
    packs: dict[str, tuple[int, list[Features]]] = {}  # key -> (its first entry, its inputs)
    start = 0
    with input_file(folder).open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            key, texts = api.inputs(raw)
            if start + len(texts) > len(entries) or entries[start].id != key:
                break  # not the entries' order (never written so): the rest go unanswered
            packs[key] = (start, [features(text) for text in texts])
            start += len(texts)
    for line in lines:
        pack = packs.get(line.job_id)
        if pack is None:
            continue  # not a line of this batch
        first, xs = pack
        ids = [entries[first + i].id for i in range(len(xs))]
        yield from _split(provider, line, ids, xs, estimator)


def _split(
    provider: Provider,
    line: BatchLine,
    ids: list[str],
    xs: list[Features],
    estimator: TokenEstimator,
) -> Iterator[BatchLine]:
    """One line's answer as its jobs' lines: each its vector and share of the tokens, or all
    the line's error (a pack refused for what it holds: ``Resend``)."""
    answer = line.answer
    if isinstance(answer, Reply):
        try:
            completion = provider.parse(answer)
        except ProviderError as e:
            answer = e
        else:
            if len(completion.vectors) == len(ids):
                tokens = shares(completion.input_tokens, [x[1] + x[2] for x in xs])
                vectors = completion.vectors
                for job_id, vector, share, x in zip(ids, vectors, tokens, xs, strict=True):
                    mine = replace(completion, input_tokens=share, vectors=(vector,))
                    estimate = estimator.estimate(x) if share is None else None
                    yield BatchLine(job_id, mine, line.raw, estimate)
                return
            answer = RetryableError(
                f"{len(completion.vectors)} embeddings answered for {len(ids)} inputs",
                status=200,
                unanswered=False,
            )
    if isinstance(answer, PermanentJobError) and len(ids) > 1:
        answer = Resend(
            f"{answer.message} (a line of {len(ids)} inputs: each goes again alone)",
            status=answer.status,
            body=answer.body,
            unanswered=False,
        )
    for job_id in ids:
        yield BatchLine(job_id, answer, line.raw)
