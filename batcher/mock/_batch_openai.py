"""OpenAI's batch API in the mock: the Files API for the input and the answers, and the batches.

https://platform.openai.com/docs/api-reference/batch: ``POST /v1/files`` (multipart,
``purpose=batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``
(``after``, ``limit``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch's
answers go into an output file and an error file (expired lines included). An embeddings batch
(``/v1/embeddings``) holds at most 50,000 inputs across its lines, as OpenAI's create refuses
more (https://platform.openai.com/docs/api-reference/batch/create).
"""

from __future__ import annotations

import json
from typing import Any

from .._core.sniff import sniff
from ._batch_store import Batch, BatchAPI
from ._wire import Request, Response, json_response

__all__ = ["OpenAIBatches"]

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/images/generations", "/v1/embeddings")
"""The Batch API endpoints the mock runs (OpenAI's take more: moderations, completions...)."""
MAX_EMBEDDING_INPUTS = 50_000
"""Inputs an embeddings batch holds at most, across all its requests."""


class OpenAIBatches(BatchAPI):
    """OpenAI's batch routes: a batch made from an uploaded file, answered into files."""

    wire = "openai"
    running = "in_progress"
    completed = "completed"
    expired = "expired"
    cancelled = "cancelled"

    async def handle(self, request: Request) -> Response | None:
        path = request.path.removeprefix("/v1")
        if path == "/files" and request.method == "POST":
            return self._upload(request)
        if path.startswith("/files/") and path.endswith("/content") and request.method == "GET":
            data = self.store.files.get(path[len("/files/") : -len("/content")])
            if data is None:
                return _openai_error(404, "No such File object")
            return Response(200, data, (("content-type", "application/jsonl"),))
        if path == "/batches":
            if request.method == "POST":
                return self._create(request)
            return await self._list(request)
        if path.startswith("/batches/"):
            rest = path[len("/batches/") :]
            batch_id, _, action = rest.partition("/")
            batch = self.find(batch_id)
            if batch is None:
                return _openai_error(404, f"No batch found with id '{batch_id}'.")
            if action == "cancel" and request.method == "POST":
                batch.cancel = True
            await self.advance(batch)
            return json_response(200, self._object(batch))
        return None

    def line_path(self, batch: Batch) -> str:
        return batch.endpoint

    def _upload(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _openai_error(401, "You didn't provide an API key.")
        if auth[7:].startswith("bad"):
            return _openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        fields = _multipart(request)
        data = fields.get("file")
        purpose = fields.get("purpose")
        if purpose not in (b"batch", b"user_data", b"vision") or data is None:
            return _openai_error(400, "a file and purpose=batch, user_data or vision are required")
        files = self.store.files
        file_id = f"file-mock{len(files) + 1:06d}"
        # a user_data or vision file is one a request names
        # (https://platform.openai.com/docs/guides/pdf-files, .../images-vision)
        named = purpose != b"batch"
        mime = (sniff(data[:64]) or "application/octet-stream") if named else None
        expires = self.store.keep(file_id, data, mime)
        body = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(self.store.clock()),
            "expires_at": int(expires),
            "filename": "batch.jsonl" if mime is None else "file",
            "purpose": purpose.decode(),
        }
        return json_response(200, body)

    def _create(self, request: Request) -> Response:
        store = self.store
        try:
            body = json.loads(request.body)
            data = store.input(str(body["input_file_id"]))
            if data is None:  # never uploaded, or expired
                return _openai_error(404, f"No such File object: {body['input_file_id']}")
            lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            requests = [(str(line["custom_id"]), dict(line["body"])) for line in lines]
        except (json.JSONDecodeError, KeyError, TypeError):
            return _openai_error(400, "the input file or the request is malformed")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS or body.get("completion_window") != "24h":
            return _openai_error(400, f"endpoint must be one of {', '.join(ENDPOINTS)}, window 24h")
        if any(line.get("url") != endpoint for line in lines):
            return _openai_error(400, "every line's url must be the batch's endpoint")
        if endpoint == "/v1/embeddings":
            inputs = sum(_inputs(b.get("input")) for _, b in requests)
            if inputs > MAX_EMBEDDING_INPUTS:
                return _openai_error(
                    400,
                    f"an embeddings batch holds at most {MAX_EMBEDDING_INPUTS} inputs across its "
                    f"requests: this one holds {inputs}",
                )
        tag = str((body.get("metadata") or {}).get("batcher_tag") or "")
        batch = Batch(
            id=f"batch_mock{len(store.batches) + 1:06d}",
            wire="openai",
            tag=tag,
            model=str(requests[0][1].get("model") if requests else ""),
            created=store.clock(),
            lines=requests,
            headers={
                "authorization": request.headers.get("authorization", ""),
                "host": request.headers.get("host", "127.0.0.1"),  # image URLs name it
            },
            input_file_id=body["input_file_id"],
            metadata=dict(body.get("metadata") or {}),
            endpoint=endpoint,
        )
        store.add(batch)
        return json_response(200, self._object(batch))

    async def _list(self, request: Request) -> Response:
        mine = self.mine()[::-1]  # newest first
        after = request.query.get("after")
        if after:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit") or 20)
        page = mine[:limit]
        for batch in page:
            await self.advance(batch)
        return json_response(
            200,
            {
                "object": "list",
                "data": [self._object(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(mine) > limit,
            },
        )

    def _object(self, batch: Batch) -> dict[str, Any]:
        ok = sum(1 for _, status, _ in batch.answers if status == 200)
        done = batch.state in self.final
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.state,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created),
            "expires_at": int(batch.created + 86400),
            "completed_at": int(batch.ended) if done and batch.ended else None,
            "request_counts": {
                "total": len(batch.lines),
                "completed": ok,
                "failed": len(batch.answers) - ok + len(batch.expired),
            },
            "metadata": batch.metadata,
        }

    def keep_answers(self, batch: Batch) -> None:
        """The output file (the lines answered 200) and the error file (the others, and the
        expired ones) of ``batch``, each only if it has lines."""
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for n, (key, status, body) in enumerate(batch.answers):
            line = {
                "id": f"batch_req_{batch.id}_{n}",
                "custom_id": key,
                "response": {"status_code": status, "request_id": f"req_{n}", "body": body},
                "error": None,
            }
            (out if status == 200 else err).append(line)
        for n, key in enumerate(batch.expired):
            err.append(
                {
                    "id": f"batch_req_{batch.id}_x{n}",
                    "custom_id": key,
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion "
                        "window expired.",
                    },
                }
            )
        files = self.store.files
        for lines, attr in ((out, "output_file_id"), (err, "error_file_id")):
            if lines:
                file_id = f"file-mock{len(files) + 1:06d}"
                files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                setattr(batch, attr, file_id)


def _inputs(value: Any) -> int:
    """The inputs an embeddings request's ``input`` holds."""
    return len(value) if isinstance(value, list) else 1


def _multipart(request: Request) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` body, by name."""
    ctype = request.headers.get("content-type", "")
    _, _, boundary = ctype.partition("boundary=")
    if not boundary:
        return {}
    out = {}
    for part in request.body.split(b"--" + boundary.strip('"').encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        start = text.find('name="')
        if start < 0:
            continue
        name = text[start + 6 : text.find('"', start + 6)]
        out[name] = content.removesuffix(b"\r\n")
    return out


def _openai_error(status: int, message: str, code: str | None = None) -> Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return json_response(status, body)
