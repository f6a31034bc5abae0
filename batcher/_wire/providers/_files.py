"""The providers' Files APIs: a file uploaded once, then named by its id in any request.

OpenAI: ``POST /files``, multipart with ``purpose`` and ``file``, answers ``{"id", "expires_at"}``
(https://platform.openai.com/docs/api-reference/files/create); a request names the file by its
id (``file.file_id`` in chat, ``input_file.file_id`` in the Responses API). Gemini: the resumable
protocol (https://ai.google.dev/api/files): ``POST /upload/v1beta/files`` with
``X-Goog-Upload-Protocol: resumable`` / ``-Command: start`` answers an ``X-Goog-Upload-URL``, to
which the bytes go with ``-Command: upload, finalize``; it answers ``{"file": {"name", "uri",
"expirationTime"}}``, and a request names the file as ``fileData {fileUri, mimeType}``. Gemini
keeps a file 48 hours (https://ai.google.dev/gemini-api/docs/files). A Gemini file is ``state``
``PROCESSING`` until it can be used (a video's frames are being extracted), then ``ACTIVE``, or
``FAILED`` (https://ai.google.dev/api/files#State); ``GET /v1beta/files/{id}`` reads it again
(https://ai.google.dev/api/files#method:-files.get). The batch APIs upload their input files
through these too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..._core.errors import RetryableError
from ..bodies import FileBody
from ..transport import Transport
from ._base import Provider
from ._batch import check
from ._http import encode

__all__ = [
    "GEMINI_UPLOAD",
    "Uploaded",
    "gemini_file",
    "gemini_upload",
    "multipart",
    "openai_upload",
]

GEMINI_UPLOAD = "/upload/v1beta/files"


@dataclass(frozen=True, slots=True)
class Uploaded:
    """A file the provider keeps: what a request names it by (OpenAI's id, Gemini's uri), its
    resource name, and when it expires (epoch seconds; None if the provider said not); Gemini's
    ``state`` (``PROCESSING``, ``ACTIVE``, ``FAILED``: ``ACTIVE`` where the provider has none)
    and, if it failed, why."""

    ref: str
    name: str
    expires: float | None
    state: str = "ACTIVE"
    error: str | None = None


def multipart(
    fields: Mapping[str, str], file: tuple[str, str, Path], content_type: str = "application/jsonl"
) -> tuple[FileBody, str]:
    """A ``multipart/form-data`` body of text ``fields`` and one file (read from disk as it is
    sent), and its content type."""
    boundary = f"batcher-{uuid.uuid4().hex}"
    parts = [
        f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    name, filename, path = file
    parts.append(
        f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"content-type: {content_type}\r\n\r\n".encode()
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    return FileBody(path, b"".join(parts), tail), f"multipart/form-data; boundary={boundary}"


async def openai_upload(
    transport: Transport,
    provider: Provider,
    path: Path,
    *,
    purpose: str,
    filename: str,
    mime: str,
    what: str,
) -> Uploaded:
    """Upload the file at ``path`` to OpenAI's ``/files`` for ``purpose``."""
    body, content_type = multipart({"purpose": purpose}, ("file", filename, path), mime)
    reply = await transport.request("POST", "files", body, content_type)
    answer = check(provider, reply, what)
    expires = answer.get("expires_at")
    file_id = str(answer["id"])
    return Uploaded(file_id, file_id, float(expires) if isinstance(expires, int | float) else None)


async def gemini_upload(
    transport: Transport,
    provider: Provider,
    path: Path,
    *,
    size: int,
    mime: str,
    name: str,
    what: str,
) -> Uploaded:
    """Upload the file at ``path`` (of ``size`` bytes) to Gemini's Files API by the resumable
    protocol."""
    start = {
        "x-goog-upload-protocol": "resumable",
        "x-goog-upload-command": "start",
        "x-goog-upload-header-content-length": str(size),
        "x-goog-upload-header-content-type": mime,
    }
    meta = encode({"file": {"display_name": name}})
    reply = await transport.request("POST", GEMINI_UPLOAD, meta, headers=start)
    check(provider, reply, f"starting {what}")
    url = urlsplit(reply.headers.get("x-goog-upload-url", ""))
    if not url.path:
        raise RetryableError("the Files API answered no X-Goog-Upload-URL", status=200)
    session = url.path + (f"?{url.query}" if url.query else "")  # on our own endpoint
    finish = {"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "0"}
    reply = await transport.request("POST", session, FileBody(path), mime, finish)
    return _gemini_file(check(provider, reply, what)["file"])


async def gemini_file(transport: Transport, provider: Provider, name: str, what: str) -> Uploaded:
    """The Gemini file ``name`` (``files/...``) as the Files API has it now (its state)."""
    reply = await transport.request("GET", name)
    return _gemini_file(check(provider, reply, what))


def _gemini_file(file: Mapping[str, Any]) -> Uploaded:
    """A Gemini ``File`` resource (https://ai.google.dev/api/files#File) as ``Uploaded``."""
    expires = file.get("expirationTime")
    when = None
    if isinstance(expires, str):
        try:
            when = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except ValueError:
            when = None
    state = file.get("state")
    error = file.get("error")
    why = str(error.get("message") or error) if isinstance(error, Mapping) else None
    return Uploaded(
        str(file.get("uri") or file["name"]),
        str(file["name"]),
        when,
        state if isinstance(state, str) and state != "STATE_UNSPECIFIED" else "ACTIVE",
        why,
    )
