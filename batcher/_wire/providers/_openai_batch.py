"""OpenAI's Batch API: a JSONL file uploaded to ``/files``, a batch made of it, two files back.

As documented in https://platform.openai.com/docs/api-reference/batch and
https://platform.openai.com/docs/api-reference/files/create:

- ``POST /files`` (multipart: ``purpose=batch``, ``file``) answers ``{"id": "file-..."}``; each
  input line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``; a
  file holds at most 50,000 requests and 200 MB.
- ``POST /batches`` ``{"input_file_id", "endpoint", "completion_window": "24h", "metadata"}``
  (metadata: up to 16 pairs, values up to 512 characters) answers the batch object; ``GET
  /batches/{id}`` reads it again, ``GET /batches?after=&limit=`` lists them newest first
  (``data``, ``has_more``, ``last_id``), ``POST /batches/{id}/cancel`` cancels one.
- Its ``status`` is ``validating``, ``in_progress``, ``finalizing`` or ``cancelling`` on the way
  to ``completed``, ``failed``, ``expired`` or ``cancelled``; ``request_counts`` holds ``total``,
  ``completed`` and ``failed``.
- ``GET /files/{id}/content`` of ``output_file_id`` and ``error_file_id`` gives lines ``{"id",
  "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``; a request the batch
  never ran (expired, cancelled) has ``response: null`` and ``error: {"code", "message"}``
  (``batch_expired``, ``batch_cancelled``).

Embeddings go to ``/v1/embeddings``, a line's body the online request's (``{model, input:
[texts], dimensions?, encoding_format}``): a line packs many jobs' inputs as an online request
does, its ``custom_id`` its first job's, and its answer's ``data[i].index`` ties each vector to its
input. A batch of them holds at most 50,000 inputs across its lines (the Batch API's create
reference), which ``max_requests`` bounds, counted in jobs.

The input file is sent from disk as it is read, in a multipart body of known length; the results
files are written to disk as they arrive and read a line at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._core.codec import loads
from ..._core.errors import PermanentJobError, RetryableError
from ..transport import Reply, Transport
from ._base import RequestSpec
from ._batch import BatchInfo, BatchLine, check, file_lines
from ._files import Uploaded, openai_upload
from ._http import encode
from ._openai import OpenAIProvider

__all__ = ["OpenAIBatch"]

ENDPOINT = "/v1/chat/completions"
"""The batch endpoint of chat requests; an images API request goes to ``/v1/images/generations``
and a Responses API one to ``/v1/responses`` (the Batch API's ``endpoint`` takes each, among
others: its create reference)."""
TAG_KEY = "batcher_tag"
"""The metadata key whose value is batcher's tag of the batch."""
_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})
"""Error codes of lines the batch never ran: they may be sent again."""


class OpenAIBatch:
    """OpenAI's Batch API (and compatible servers that implement it)."""

    max_requests = 50_000
    max_bytes = 190 * 1024 * 1024  # under the documented 200 MB, for the multipart's envelope
    packs = True
    """An embeddings line carries many inputs (the online request's ``input`` list)."""

    def __init__(self) -> None:
        self.provider = OpenAIProvider()

    def line(self, job_id: str, spec: RequestSpec) -> bytes:
        url = _endpoint(spec)
        return encode({"custom_id": job_id, "method": "POST", "url": url, "body": spec.body})

    def size(self, line: bytes) -> int:
        return len(line) + 1

    def inputs(self, line: bytes) -> tuple[str, list[str]]:
        """An embeddings input line's ``custom_id`` and its texts, in order."""
        item = loads(line)
        texts = item["body"]["input"]
        return str(item["custom_id"]), [texts] if isinstance(texts, str) else list(texts)

    async def upload(self, transport: Transport, tag: str, path: Path) -> Uploaded:
        what = "uploading the batch input file"
        uploaded = await openai_upload(
            transport,
            self.provider,
            path,
            purpose="batch",
            filename=f"{tag}.jsonl",
            mime="application/jsonl",
            what=what,
        )
        return uploaded

    async def create(
        self, transport: Transport, model: str, tag: str, path: Path, file: str | None
    ) -> BatchInfo:
        with path.open("rb") as f:  # every line goes to one endpoint: the first line's
            first = f.readline()
        endpoint = json.loads(first).get("url") if first.strip() else ENDPOINT
        create = {
            "input_file_id": file,
            "endpoint": endpoint or ENDPOINT,
            "completion_window": "24h",
            "metadata": {TAG_KEY: tag},
        }
        reply = await transport.request("POST", "batches", encode(create))
        return _info(check(self.provider, reply, "creating the batch"))

    async def get(self, transport: Transport, batch_id: str) -> BatchInfo:
        reply = await transport.request("GET", f"batches/{batch_id}")
        return _info(check(self.provider, reply, f"reading batch {batch_id}"))

    async def find(self, transport: Transport, tag: str) -> BatchInfo | None:
        after = ""
        while True:
            query = f"?limit=100&after={after}" if after else "?limit=100"
            reply = await transport.request("GET", f"batches{query}")
            page = check(self.provider, reply, "listing batches")
            for batch in page.get("data") or []:
                if (batch.get("metadata") or {}).get(TAG_KEY) == tag:
                    return _info(batch)
            after = page.get("last_id") or ""
            if not page.get("has_more") or not after:
                return None

    async def cancel(self, transport: Transport, batch_id: str) -> None:
        reply = await transport.request("POST", f"batches/{batch_id}/cancel")
        check(self.provider, reply, f"cancelling batch {batch_id}")

    async def lines(
        self, transport: Transport, info: BatchInfo, ids: Sequence[str], folder: Path
    ) -> Iterator[BatchLine]:
        files = []
        for key in ("output_file_id", "error_file_id"):
            file_id = info.raw.get(key)
            if not file_id:
                continue
            dest = folder / f"{info.id}.{key.removesuffix('_file_id')}.jsonl"
            reply = await transport.download(f"files/{file_id}/content", dest)
            if not 200 <= reply.status_code < 300:
                check(self.provider, reply, f"downloading {key} {file_id}")
            files.append(dest)
        return _read_lines(files)


def _info(batch: Mapping[str, Any]) -> BatchInfo:
    status = str(batch.get("status") or "")
    counts = batch.get("request_counts") or {}
    errors = (batch.get("errors") or {}).get("data") or []
    error = "; ".join(str(e.get("message") or e.get("code")) for e in errors) or None
    return BatchInfo(
        id=str(batch["id"]),
        state=status,
        finished=status in _FINAL,
        tag=(batch.get("metadata") or {}).get(TAG_KEY),
        total=counts.get("total"),
        succeeded=counts.get("completed"),
        failed=counts.get("failed"),
        error=error,
        raw=batch,
    )


def _read_lines(files: list[Path]) -> Iterator[BatchLine]:
    for path in files:
        for raw in file_lines(path):
            line = _parse_line(raw)
            if line is not None:
                yield line


def _parse_line(raw: str) -> BatchLine | None:
    """One output or error line; None for a line that is not one (it cannot be matched)."""
    try:
        # orjson: a third of the standard library's time, a line per job; not ``exact``: the
        # id is a string and the body is read again by the provider's parser, which is not
        # either (a check for long integers cost a sixth of a line's collection)
        line = loads(raw, exact=False)
        job_id = line["custom_id"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(job_id, str):
        return None
    response = line.get("response")
    if isinstance(response, Mapping) and isinstance(response.get("status_code"), int):
        headers = {"x-request-id": str(response.get("request_id") or "")}
        content = encode(response.get("body"))
        return BatchLine(job_id, Reply(response["status_code"], headers, content), raw)
    error = line.get("error") or {}
    code = str(error.get("code") or "")
    message = f"{code}: {error.get('message') or 'no answer in the batch'}"
    if code in _NOT_RUN or not code:
        return BatchLine(job_id, RetryableError(message, body=raw), raw)
    return BatchLine(job_id, PermanentJobError(message, body=raw), raw)


def _endpoint(spec: RequestSpec) -> str:
    """The Batch API's name of the endpoint a request goes to: ``/v1/`` and its path."""
    return f"/v1/{spec.path}"
