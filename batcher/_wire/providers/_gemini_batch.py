"""Gemini's Batch API with inline requests: one call creates the batch, its answers come inline.

As documented in https://ai.google.dev/api/batch-api and the Batch Mode guide
(https://ai.google.dev/gemini-api/docs/batch-mode):

- ``POST models/{model}:batchGenerateContent`` with ``{"batch": {"display_name", "input_config":
  {"requests": {"requests": [{"request": GenerateContentRequest, "metadata": {"key"}}]}}}}``
  answers an Operation named ``batches/{id}``; inline requests are for batches under 20 MB.
- ``GET batches/{id}`` reads the Operation again: ``metadata`` is the batch (``state``,
  ``displayName``, ``batchStats``), ``done`` turns true at the end, and ``response`` then holds
  ``inlinedResponses.inlinedResponses``: ``{"metadata", "response"}`` or ``{"metadata", "error"}``
  (a google.rpc Status), in the requests' order. The service has been seen omitting
  ``metadata`` (https://discuss.ai.google.dev/t/gemini-batch-api-doesnt-return-the-user-metadata-
  back/112386), so a response is matched by its key where present and by its place otherwise.
- The reference names the states ``BATCH_STATE_PENDING``, ``_RUNNING``, ``_SUCCEEDED``,
  ``_FAILED``, ``_CANCELLED``, ``_EXPIRED``; the guide's SDK examples say ``JOB_STATE_*``: both
  are read.
- ``GET batches?pageSize=&pageToken=`` lists them (``operations``, ``nextPageToken``);
  ``POST batches/{id}:cancel`` cancels one.

A batch over the inline limit goes as a JSONL file instead (https://ai.google.dev/gemini-api/
docs/batch-mode#input-file), one ``{"key", "request"}`` a line, uploaded through the Files API's
resumable protocol (https://ai.google.dev/api/files: ``POST /upload/v1beta/files`` with
``X-Goog-Upload-Protocol: resumable`` and ``X-Goog-Upload-Command: start`` answers the session's
URL in ``X-Goog-Upload-URL``; the bytes go there with ``upload, finalize``; the answer names the
file ``files/{id}``) and named in ``input_config.file_name``. Its answers come back as
``response.responsesFile``, a JSONL file of ``{"key", "response"}`` or ``{"key", "error"}`` lines
downloaded from ``GET /download/v1beta/files/{id}:download?alt=media``.

Embeddings go the same way through ``POST models/{model}:asyncBatchEmbedContent``
(https://developers.googleblog.com/gemini-batch-api-now-supports-embeddings-and-openai-compatibility
and https://ai.google.dev/gemini-api/docs/batch-mode#batch-embedding): the batch (``display_name``,
``input_config``) has the same shape, each request is one ``EmbedContentRequest`` (``{"content":
{"parts": [{"text"}]}, "taskType"?, "outputDimensionality"?}``, its model the batch's), and each
answer an ``EmbedContentResponse`` (``{"embedding": {"values"}}``), inline or a responses file's
line as above. A line holds one input: ``batchEmbedContents``' many-input form has no batch twin.

Either way the chunk's lines are first written to disk as a JSONL file of ``{"key", "request"}``:
an inline batch reads it back into its create call (under 20 MB), a larger one is uploaded from
it as it is read; a responses file is written to disk as it arrives and read a line at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._core.codec import loads
from ..transport import Reply, Transport
from ._base import RequestSpec
from ._batch import BatchInfo, BatchLine, check, file_lines
from ._files import Uploaded, gemini_upload
from ._gemini import GeminiProvider, model_path
from ._http import encode

__all__ = ["GeminiBatch"]

DOWNLOAD = "/download/v1beta/files"
"""The Files API's upload and download paths, on the API's host beside ``/v1beta``."""
_FINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})

_HTTP_OF_CODE = {
    1: (499, "CANCELLED"),
    3: (400, "INVALID_ARGUMENT"),
    4: (504, "DEADLINE_EXCEEDED"),
    5: (404, "NOT_FOUND"),
    7: (403, "PERMISSION_DENIED"),
    8: (429, "RESOURCE_EXHAUSTED"),
    9: (400, "FAILED_PRECONDITION"),
    13: (500, "INTERNAL"),
    14: (503, "UNAVAILABLE"),
    16: (401, "UNAUTHENTICATED"),
}
"""google.rpc.Code -> the HTTP status and name the online API answers for it
(https://google.aip.dev/193)."""


class GeminiBatch:
    """Gemini's ``batchGenerateContent``: inline requests and responses, or files for a batch
    over the inline limit."""

    max_requests = 50_000
    max_bytes = 1900 * 1024 * 1024  # a file: under the Files API's 2 GB
    inline_bytes = 19 * 1024 * 1024  # under the documented 20 MB of an inline batch
    inline_requests = 2_000
    """Requests in an inline batch at most: its answers come back inside the batch's JSON, read
    whole, where a responses file is read a line at a time (50,000 answers of a few KB inline
    would be hundreds of MB once parsed)."""

    packs = False
    """A line holds one request, one input (an embedding too)."""

    def __init__(self, *, embeddings: bool = False) -> None:
        self.provider = GeminiProvider()
        self.embeddings = embeddings
        """Batches of ``EmbedContentRequest`` (``asyncBatchEmbedContent``), not of
        ``GenerateContentRequest``."""

    def line(self, job_id: str, spec: RequestSpec) -> bytes:
        if self.embeddings:  # batchEmbedContents' one request, less its model (the batch's)
            one = {k: v for k, v in spec.body["requests"][0].items() if k != "model"}
            return encode({"key": job_id, "request": one})
        return encode({"key": job_id, "request": spec.body})

    def inputs(self, line: bytes) -> tuple[str, list[str]]:
        """An embeddings input line's key and its one text."""
        item = loads(line)
        parts = item["request"]["content"]["parts"]
        return str(item["key"]), ["".join(str(p.get("text", "")) for p in parts)]

    def size(self, line: bytes) -> int:
        """As inline, ``{"request":R,"metadata":{"key":K}}``: 13 bytes more than the file's
        ``{"key":K,"request":R}`` (compact JSON), and a comma or newline."""
        return len(line) + 14

    async def upload(self, transport: Transport, tag: str, path: Path) -> Uploaded | None:
        """The file once uploaded by the resumable protocol (its ``name``, ``files/{id}``, is
        what a batch names; it lives 48 hours, https://ai.google.dev/gemini-api/docs/files, until
        the ``expirationTime`` the upload answers); None (inline) for a file
        under the inline limits (a line inline is as long, give or take 14 bytes: the limit is
        a megabyte under the documented 20 MB; and ``inline_requests``)."""
        size, lines = _size(path)
        if size <= self.inline_bytes and lines <= self.inline_requests:
            return None
        what = "the upload of the batch input file"
        uploaded = await gemini_upload(
            transport, self.provider, path, size=size, mime="application/jsonl", name=tag, what=what
        )
        return uploaded

    async def create(
        self, transport: Transport, model: str, tag: str, path: Path, file: str | None
    ) -> BatchInfo:
        if file is not None:
            body = encode({"batch": {"display_name": tag, "input_config": {"file_name": file}}})
        else:  # the file's lines inline, joined as bytes (no tree of the whole batch in memory)
            config = encode({"display_name": tag, "input_config": {"requests": {"requests": []}}})
            head, _, tail = config.rpartition(b"[]")
            body = b"".join([b'{"batch":', head, b"[", _inline(path), b"]", tail, b"}"])
        method = "asyncBatchEmbedContent" if self.embeddings else "batchGenerateContent"
        path_ = model_path(model, method)
        reply = await transport.request("POST", path_, body)
        return _info(check(self.provider, reply, "creating the batch"))

    async def get(self, transport: Transport, batch_id: str) -> BatchInfo:
        reply = await transport.request("GET", batch_id)
        return _info(check(self.provider, reply, f"reading {batch_id}"))

    async def find(self, transport: Transport, tag: str) -> BatchInfo | None:
        token = ""
        while True:
            query = f"?pageSize=100&pageToken={token}" if token else "?pageSize=100"
            reply = await transport.request("GET", f"batches{query}")
            page = check(self.provider, reply, "listing batches")
            for op in page.get("operations") or []:
                if (op.get("metadata") or {}).get("displayName") == tag:
                    return _info(op)
            token = page.get("nextPageToken") or ""
            if not token:
                return None

    async def cancel(self, transport: Transport, batch_id: str) -> None:
        reply = await transport.request("POST", f"{batch_id}:cancel")
        check(self.provider, reply, f"cancelling {batch_id}")

    async def lines(
        self, transport: Transport, info: BatchInfo, ids: Sequence[str], folder: Path
    ) -> Iterator[BatchLine]:
        response = info.raw.get("response") or (info.raw.get("metadata") or {}).get("output") or {}
        if isinstance(response.get("output"), Mapping):  # the batch itself, its output within
            response = response["output"]
        if response.get("responsesFile"):
            name = str(response["responsesFile"])
            dest = folder / f"{info.id.rpartition('/')[2]}.out.jsonl"
            return await self._download(transport, name, dest)
        embeds = self.embeddings
        inlined = (response.get("inlinedResponses") or {}).get("inlinedResponses") or []
        out = []
        for n, item in enumerate(inlined):
            if not isinstance(item, Mapping):
                continue
            key = (item.get("metadata") or {}).get("key")
            if not isinstance(key, str):
                if n >= len(ids):
                    continue
                key = ids[n]  # no key: the responses keep the requests' order
            out.append(BatchLine(key, _reply(item, embeds), encode(item).decode()))
        return iter(out)

    async def _download(self, transport: Transport, name: str, dest: Path) -> Iterator[BatchLine]:
        """The lines of a responses file: ``{"key", "response"}`` or ``{"key", "error"}``."""
        path = f"{DOWNLOAD}/{name.removeprefix('files/')}:download?alt=media"
        reply = await transport.download(path, dest)
        if not 200 <= reply.status_code < 300:
            check(self.provider, reply, f"downloading the responses file {name}")
        return _read_lines(dest, self.embeddings)


def _size(path: Path) -> tuple[int, int]:
    """Bytes and lines in the input file at ``path`` (too quick to hand to a thread)."""
    lines = 0
    with path.open("rb") as f:
        while piece := f.read(1024 * 1024):
            lines += piece.count(b"\n")
    return path.stat().st_size, lines


def _inline(path: Path) -> bytes:
    """The input file's lines as inline requests, ``{"request", "metadata": {"key"}}``, joined
    by commas."""
    out = bytearray()
    for raw in file_lines(path):
        item = json.loads(raw)
        if out:
            out += b","
        out += encode({"request": item["request"], "metadata": {"key": item["key"]}})
    return bytes(out)


def _read_lines(path: Path, embeds: bool) -> Iterator[BatchLine]:
    for raw in file_lines(path):
        try:
            # orjson: a third of the standard library's time; not ``exact`` (the key is a
            # string, the response read again by the provider's parser, which is not either)
            item = loads(raw, exact=False)
        except ValueError:
            continue
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            yield BatchLine(item["key"], _reply(item, embeds), raw)


def _reply(item: Mapping[str, Any], embeds: bool = False) -> Reply:
    """An inline response as the online answer it stands for; an ``EmbedContentResponse`` as
    the one-input ``batchEmbedContents`` answer (``embeddings: [embedding]``) the embeddings
    wire reads."""
    error = item.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        status, name = (
            _HTTP_OF_CODE.get(code, (500, "UNKNOWN")) if isinstance(code, int) else (500, "UNKNOWN")
        )
        body = {"error": {"code": status, "message": error.get("message") or "", "status": name}}
        return Reply(status, {}, encode(body))
    response = item.get("response") or {}
    if embeds and isinstance(response, Mapping) and "embedding" in response:
        embedding = response["embedding"]
        response = {k: v for k, v in response.items() if k != "embedding"}
        response["embeddings"] = [embedding]
    return Reply(200, {}, encode(response))


def _state(word: str) -> str:
    return word.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")


def _info(op: Mapping[str, Any]) -> BatchInfo:
    meta = op.get("metadata") or {}
    state = str(meta.get("state") or "")
    stats = meta.get("batchStats") or {}
    error = op.get("error") or {}

    def number(key: str) -> int | None:
        value = stats.get(key)
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

    return BatchInfo(
        id=str(op.get("name") or meta.get("name")),
        state=state,
        finished=bool(op.get("done")) or _state(state) in _FINAL,
        tag=meta.get("displayName"),
        total=number("requestCount"),
        succeeded=number("successfulRequestCount"),
        failed=number("failedRequestCount"),
        error=str(error.get("message")) if error else None,
        raw=op,
    )
