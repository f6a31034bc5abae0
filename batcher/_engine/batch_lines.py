"""What a collected batch line becomes: the row its job would have got online.

A line that answered is parsed by its endpoint's wire, as an online answer is; the row keeps the
line as its ``response`` (its inline images left out), ``via = "batch"`` and the endpoint's name.
Images an answer holds (Gemini's image models, OpenAI's images endpoint) are saved under
``DIR/images/`` before the row is written, as online (``_rundir.image_files``). A line that failed
in a way that may pass later is handed back as its ``RetryableError``: the executor decides
whether it goes into a later batch, online, or becomes an error row. An embedding's row keeps no
response, as online (its vector is in ``embedding``); a line that answered many embeddings comes
split into one line a job, each parsed already (``batch_embed``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from .._config.prices import Prices
from .._core.clock import Clock
from .._core.completion import Completion
from .._core.errors import ProviderError, RetryableError
from .._rundir.batchlog import Chunk
from .._rundir.chunk_files import Entry
from .._rundir.image_files import download, save_images
from .._rundir.rows import Record
from .._wire.providers._base import without_data
from .._wire.providers._batch import BatchLine
from .batch_chunks import BatchEndpoint
from .record import Answered, record_of

__all__ = ["LineRecords"]


class LineRecords:
    """Makes the rows of a run's batch lines."""

    def __init__(self, prices: Prices, clock: Clock, out: Path):
        self.prices = prices
        self.clock = clock
        self.out = out

    def judge(
        self,
        ep: BatchEndpoint,
        job: Entry,
        chunk: Chunk,
        line: BatchLine | None,
        unanswered: str,
    ) -> tuple[Record, Completion | None] | RetryableError:
        """The row of ``job``'s line with the answer it holds, or the retryable error it (or
        its absence) is."""
        try:
            if line is None:
                raise RetryableError(unanswered)
            if isinstance(line.answer, ProviderError):
                raise line.answer
            if isinstance(line.answer, Completion):  # a job's part of a packed line
                completion = line.answer
            else:
                completion = ep.provider.parse(line.answer)
        except RetryableError as e:
            return e
        except ProviderError as e:
            return self.record(ep, job, chunk, line, error=e), None
        return self.record(ep, job, chunk, line, completion=completion), completion

    def record(
        self,
        ep: BatchEndpoint,
        job: Entry,
        chunk: Chunk,
        line: BatchLine | None,
        *,
        completion: Completion | None = None,
        error: ProviderError | None = None,
    ) -> Record:
        """The row of a job answered by a batch line: as online, with the line as response."""
        submitted = chunk.submitted if chunk.submitted is not None else chunk.created
        now = self.clock.time()
        how = Answered(
            attempts=chunk.attempt,
            latency_ms=max(0.0, now - submitted) * 1000,
            fingerprint=job.fingerprint,
            finished_at=now,
            via="batch",
            endpoint=ep.name,
        )
        raw = line.raw if line is not None else None
        if raw is not None and completion is not None and completion.images:
            raw = _without_images(raw)
        if completion is not None and completion.vectors:
            raw = None  # as online: the vector is in ``embedding``
        record = record_of(
            job,
            chunk.model,
            how,
            self.prices,
            ep.target.redact,
            completion=completion,
            error=error,
            raw=raw,
        )
        estimate = line.estimate if line is not None else None
        unreported = completion is not None and completion.input_tokens is None
        if unreported and estimate is not None and self.prices.price(chunk.model) is not None:
            cost = self.prices.cost(chunk.model, estimate, 0, batch=True)  # as online's estimate
            record = replace(record, cost_usd=cost)
        return record

    async def with_images(self, record: Record, completion: Completion | None) -> Record:
        """``record`` with the images its answer holds saved under ``DIR/images/`` (downloaded
        first where the answer gave URLs), durably before the row is written."""
        if completion is None or not completion.images:
            return record
        images = completion.images
        if any(image.data is None for image in images):
            try:
                images = await anyio.to_thread.run_sync(download, images)
            except OSError as e:  # billed and answered: an error row a rerun may retry
                why = f"cannot download an image answered: {e}"
                return replace(record, status="error", error=why, error_kind="retryable")
        entries = await anyio.to_thread.run_sync(save_images, self.out, record.id, images)
        return replace(record, images=tuple(entries))


def _without_images(raw: str) -> str:
    """A batch line with its inline images (base64) replaced by a note of their length."""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        return raw
    return json.dumps(without_data(body), ensure_ascii=False, separators=(",", ":"))
