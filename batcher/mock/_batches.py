"""Both providers' batch APIs, answering every line through the mock's one request pipeline.

OpenAI (https://platform.openai.com/docs/api-reference/batch): ``POST /v1/files`` (multipart,
``purpose=batch``), ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``
(``after``, ``limit``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``.
Gemini (https://ai.google.dev/api/batch-api): ``POST /v1beta/models/{m}:batchGenerateContent``
with inline requests or ``input_config.file_name`` (answered inline, or as a ``responsesFile``),
``GET /v1beta/batches`` (``pageSize``, ``pageToken``), ``GET /v1beta/batches/{id}``, ``POST
/v1beta/batches/{id}:cancel``; the Files API's resumable upload (``POST /upload/v1beta/files``)
and ``GET /download/v1beta/files/{id}:download``.

A batch moves on when it is looked at, by the mock's clock: validating (OpenAI) or pending at
creation, running until ``batch_delay`` seconds have passed, then every line is answered at once
as the online route would answer it (faults by prompt marker included, rate limits not: a batch
does not count against them) and the batch is completed. A line whose prompt holds
``[[batch:expire]]`` is not run: the OpenAI batch ends ``expired`` with that line's
``batch_expired`` error, the Gemini batch ends ``BATCH_STATE_EXPIRED`` without responses. A
cancelled batch that had not run ends with no lines. With ``gradual``, line k of n is answered
once k/n of ``batch_delay`` has passed, and a batch cancelled meanwhile ends with the lines
answered by then (its output file, its Gemini responses), as OpenAI documents for a cancelled
batch's partial results. ``state.batch_creates`` lists the tags of
every batch created, for tests that check none was created twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._wire import Request, Response, json_response

__all__ = ["BatchService"]

LineAnswer = Callable[[Request], Awaitable[Response]]

EXPIRE = "[[batch:expire]]"
_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 503: 14, 504: 4}
_GEMINI_BATCH = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
_GEMINI_OUTPUT = (
    "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
)


@dataclass
class _Batch:
    id: str
    wire: str  # "openai" | "gemini"
    tag: str
    model: str
    created: float
    lines: list[tuple[str, dict[str, Any]]]  # (custom_id or key, request body)
    headers: dict[str, str]
    input_file_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    state: str = "validating"
    cancel: bool = False
    ended: float | None = None
    answers: list[tuple[str, int, Any]] = field(default_factory=list)  # key, status, body
    expired: list[str] = field(default_factory=list)
    ran: int = 0  # lines run so far (answered, or found expired)
    output_file_id: str | None = None
    error_file_id: str | None = None


class BatchService:
    """The batch routes of the mock; ``answer`` runs one line through the pipeline."""

    def __init__(
        self,
        answer: LineAnswer,
        clock: Callable[[], float],
        *,
        delay: float = 0.0,
        omit_keys: bool = False,
        gradual: bool = False,
        creates: Callable[[str], None] = lambda tag: None,
    ) -> None:
        self.answer = answer
        self.clock = clock
        self.delay = delay
        self.omit_keys = omit_keys
        """Answer Gemini inline responses without their metadata, as users report the service
        does: clients must match them by order."""
        self.gradual = gradual
        self.creates = creates
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}  # resumable upload sessions not yet finalized
        self.batches: dict[str, _Batch] = {}

    async def handle(self, request: Request) -> Response | None:
        """The answer to a batch route, or None if ``request`` is for another route."""
        if request.path == "/upload/v1beta/files" and request.method == "POST":
            return self._gemini_upload(request)
        if request.path.startswith("/download/v1beta/files/") and request.method == "GET":
            name = request.path[len("/download/v1beta/") :].removesuffix(":download")
            data = self.files.get(name)
            if data is None:
                return _gemini_error(404, "NOT_FOUND", f"File {name} not found.")
            return Response(200, data, (("content-type", "application/jsonl"),))
        path = request.path.removeprefix("/v1")
        if path.startswith("beta/"):
            return await self._gemini(request, path[len("beta/") :])
        if path == "/files" and request.method == "POST":
            return self._upload(request)
        if path.startswith("/files/") and path.endswith("/content") and request.method == "GET":
            data = self.files.get(path[len("/files/") : -len("/content")])
            if data is None:
                return _openai_error(404, "No such File object")
            return Response(200, data, (("content-type", "application/jsonl"),))
        if path == "/batches":
            if request.method == "POST":
                return self._create_openai(request)
            return await self._list_openai(request)
        if path.startswith("/batches/"):
            rest = path[len("/batches/") :]
            batch_id, _, action = rest.partition("/")
            batch = self.batches.get(batch_id)
            if batch is None or batch.wire != "openai":
                return _openai_error(404, f"No batch found with id '{batch_id}'.")
            if action == "cancel" and request.method == "POST":
                batch.cancel = True
            await self._advance(batch)
            return json_response(200, self._openai_object(batch))
        return None

    # --- OpenAI ---------------------------------------------------------------------------

    def _upload(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _openai_error(401, "You didn't provide an API key.")
        if auth[7:].startswith("bad"):
            return _openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        fields = _multipart(request)
        data = fields.get("file")
        if fields.get("purpose") != b"batch" or data is None:
            return _openai_error(400, "a file and purpose=batch are required")
        file_id = f"file-mock{len(self.files) + 1:06d}"
        self.files[file_id] = data
        body = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(self.clock()),
            "filename": "batch.jsonl",
            "purpose": "batch",
        }
        return json_response(200, body)

    def _create_openai(self, request: Request) -> Response:
        try:
            body = json.loads(request.body)
            data = self.files[body["input_file_id"]]
            lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            requests = [(str(line["custom_id"]), dict(line["body"])) for line in lines]
        except (json.JSONDecodeError, KeyError, TypeError):
            return _openai_error(400, "the input file or the request is malformed")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _openai_error(400, "endpoint must be /v1/chat/completions, window 24h")
        tag = str((body.get("metadata") or {}).get("batcher_tag") or "")
        batch = _Batch(
            id=f"batch_mock{len(self.batches) + 1:06d}",
            wire="openai",
            tag=tag,
            model=str(requests[0][1].get("model") if requests else ""),
            created=self.clock(),
            lines=requests,
            headers={"authorization": request.headers.get("authorization", "")},
            input_file_id=body["input_file_id"],
            metadata=dict(body.get("metadata") or {}),
        )
        self.batches[batch.id] = batch
        self.creates(tag)
        return json_response(200, self._openai_object(batch))

    async def _list_openai(self, request: Request) -> Response:
        mine = [b for b in reversed(self.batches.values()) if b.wire == "openai"]  # newest first
        after = request.query.get("after")
        if after:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit") or 20)
        page = mine[:limit]
        for batch in page:
            await self._advance(batch)
        return json_response(
            200,
            {
                "object": "list",
                "data": [self._openai_object(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(mine) > limit,
            },
        )

    def _openai_object(self, batch: _Batch) -> dict[str, Any]:
        ok = sum(1 for _, status, _ in batch.answers if status == 200)
        done = batch.state in ("completed", "expired", "cancelled")
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
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

    def _openai_files(self, batch: _Batch) -> None:
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
        for lines, attr in ((out, "output_file_id"), (err, "error_file_id")):
            if lines:
                file_id = f"file-mock{len(self.files) + 1:06d}"
                self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                setattr(batch, attr, file_id)

    # --- Gemini ---------------------------------------------------------------------------

    async def _gemini(self, request: Request, path: str) -> Response | None:
        if path.startswith("models/") and path.endswith(":batchGenerateContent"):
            if request.method != "POST":
                return None
            return self._create_gemini(
                request, path[len("models/") : -len(":batchGenerateContent")]
            )
        if path == "batches" and request.method == "GET":
            mine = [b for b in self.batches.values() if b.wire == "gemini"]
            size = int(request.query.get("pageSize") or 50)
            start = int(request.query.get("pageToken") or 0)
            page = mine[start : start + size]
            for batch in page:
                await self._advance(batch)
            body: dict[str, Any] = {"operations": [self._gemini_op(b) for b in page]}
            if start + size < len(mine):
                body["nextPageToken"] = str(start + size)
            return json_response(200, body)
        if path.startswith("batches/"):
            name, _, action = path.partition(":")
            found = self.batches.get(name)
            if found is None or found.wire != "gemini":
                return _gemini_error(404, "NOT_FOUND", f"Batch {name} not found.")
            if action == "cancel" and request.method == "POST":
                found.cancel = True
                await self._advance(found)
                return json_response(200, {})
            await self._advance(found)
            return json_response(200, self._gemini_op(found))
        return None

    def _gemini_upload(self, request: Request) -> Response:
        """The Files API's resumable upload: ``start`` opens a session, ``upload, finalize``
        sends the bytes to it (https://ai.google.dev/api/files)."""
        if not request.headers.get("x-goog-api-key"):
            return _gemini_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."
            )
        command = request.headers.get("x-goog-upload-command", "")
        if command == "start":
            session = f"upload-{len(self.uploads) + 1}"
            self.uploads[session] = b""
            host = request.headers.get("host", "mock")
            url = f"http://{host}/upload/v1beta/files?upload_id={session}"
            return json_response(
                200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            )
        session = request.query.get("upload_id", "")
        if session not in self.uploads or "finalize" not in command:
            return _gemini_error(400, "INVALID_ARGUMENT", "no such upload session")
        del self.uploads[session]
        name = f"files/mock{len(self.files) + 1:06d}"
        self.files[name] = request.body
        file = {
            "name": name,
            "mimeType": "application/jsonl",
            "sizeBytes": str(len(request.body)),
            "createTime": _iso(self.clock()),
            "state": "ACTIVE",
        }
        return json_response(200, {"file": file}, {"x-goog-upload-status": "final"})

    def _create_gemini(self, request: Request, model: str) -> Response:
        if not request.headers.get("x-goog-api-key"):
            return _gemini_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."
            )
        file_name = None
        try:
            batch = json.loads(request.body)["batch"]
            config = batch["input_config"]
            if "file_name" in config:
                file_name = str(config["file_name"])
                lines = [json.loads(x) for x in self.files[file_name].splitlines() if x.strip()]
                requests = [(str(x["key"]), dict(x["request"])) for x in lines]
            else:
                inline = config["requests"]["requests"]
                requests = [(str(r["metadata"]["key"]), dict(r["request"])) for r in inline]
        except (json.JSONDecodeError, KeyError, TypeError):
            return _gemini_error(400, "INVALID_ARGUMENT", "the batch request is malformed")
        tag = str(batch.get("display_name") or "")
        item = _Batch(
            id=f"batches/mock{len(self.batches) + 1:06d}",
            wire="gemini",
            tag=tag,
            model=model,
            created=self.clock(),
            lines=requests,
            headers={"x-goog-api-key": request.headers.get("x-goog-api-key", "")},
            state="BATCH_STATE_PENDING",
            input_file_id=file_name,
        )
        self.batches[item.id] = item
        self.creates(tag)
        return json_response(200, self._gemini_op(item))

    def _gemini_op(self, batch: _Batch) -> dict[str, Any]:
        ok = sum(1 for _, status, _ in batch.answers if status == 200)
        final = ("BATCH_STATE_SUCCEEDED", "BATCH_STATE_EXPIRED", "BATCH_STATE_CANCELLED")
        done = batch.state in final
        meta = {
            "@type": _GEMINI_BATCH,
            "model": f"models/{batch.model}",
            "displayName": batch.tag,
            "name": batch.id,
            "createTime": _iso(batch.created),
            "state": batch.state,
            "batchStats": {
                "requestCount": str(len(batch.lines)),
                "successfulRequestCount": str(ok),
                "failedRequestCount": str(len(batch.answers) - ok),
                "pendingRequestCount": str(0 if done else len(batch.lines) - batch.ran),
            },
        }
        op: dict[str, Any] = {"name": batch.id, "metadata": meta, "done": done}
        answered = batch.state == "BATCH_STATE_SUCCEEDED" or (
            batch.state == "BATCH_STATE_CANCELLED" and bool(batch.answers)
        )
        if answered and batch.output_file_id is not None:
            op["response"] = {"@type": _GEMINI_OUTPUT, "responsesFile": batch.output_file_id}
        elif answered:
            items = []
            for key, status, body in batch.answers:
                item = self._gemini_item(status, body)
                if not self.omit_keys:
                    item["metadata"] = {"key": key}
                items.append(item)
            inlined = {"inlinedResponses": items}
            op["response"] = {"@type": _GEMINI_OUTPUT, "inlinedResponses": inlined}
        return op

    def _gemini_item(self, status: int, body: Any) -> dict[str, Any]:
        """One answer as a batch gives it: the response, or a google.rpc Status."""
        if status == 200:
            return {"response": body}
        error = (body or {}).get("error") or {}
        return {"error": {"code": _GRPC.get(status, 2), "message": error.get("message", "")}}

    def _gemini_file(self, batch: _Batch) -> None:
        """The responses file of a batch made from a file: one ``{"key", ...}`` a line."""
        lines = [{"key": key, **self._gemini_item(s, b)} for key, s, b in batch.answers]
        name = f"files/mock{len(self.files) + 1:06d}"
        self.files[name] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        batch.output_file_id = name

    # --- both -----------------------------------------------------------------------------

    async def _advance(self, batch: _Batch) -> None:
        """Move ``batch`` on to where the clock says it is."""
        gemini = batch.wire == "gemini"
        final = {
            "completed",
            "expired",
            "cancelled",
            "BATCH_STATE_SUCCEEDED",
            "BATCH_STATE_EXPIRED",
            "BATCH_STATE_CANCELLED",
        }
        if batch.state in final:
            return
        now = self.clock()
        expire = [key for key, body in batch.lines if EXPIRE in json.dumps(body)]
        running = now < batch.created + self.delay
        if self.gradual and not (gemini and expire):
            due = len(batch.lines)
            if running:
                due = int(len(batch.lines) * (now - batch.created) / self.delay)
            await self._run(batch, due, expire)
        if batch.cancel:
            batch.state = "BATCH_STATE_CANCELLED" if gemini else "cancelled"
            batch.ended = now
            if batch.answers and not gemini:
                self._openai_files(batch)
            elif batch.answers and batch.input_file_id is not None:
                self._gemini_file(batch)
            return
        if running:
            batch.state = "BATCH_STATE_RUNNING" if gemini else "in_progress"
            return
        if gemini and expire:
            batch.state, batch.ended = "BATCH_STATE_EXPIRED", now
            return
        await self._run(batch, len(batch.lines), expire)
        batch.ended = now
        if gemini:
            if batch.input_file_id is not None:
                self._gemini_file(batch)
            batch.state = "BATCH_STATE_SUCCEEDED"
        else:
            self._openai_files(batch)
            batch.state = "expired" if expire else "completed"

    async def _run(self, batch: _Batch, upto: int, expire: list[str]) -> None:
        """Answer the lines of ``batch`` not yet run, up to the ``upto``-th."""
        gemini = batch.wire == "gemini"
        path = f"/v1beta/models/{batch.model}:generateContent" if gemini else "/v1/chat/completions"
        while batch.ran < min(upto, len(batch.lines)):
            key, body = batch.lines[batch.ran]
            batch.ran += 1
            if key in expire:
                batch.expired.append(key)
                continue
            raw = json.dumps(body).encode()
            response = await self.answer(Request("POST", path, batch.headers, {}, raw))
            try:
                answer = json.loads(response.body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                answer = {"error": {"message": "The server had an error processing this line."}}
                response = Response(500)
            batch.answers.append((key, response.status, answer))


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


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _openai_error(status: int, message: str, code: str | None = None) -> Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return json_response(status, body)


def _gemini_error(status: int, grpc: str, message: str) -> Response:
    return json_response(status, {"error": {"code": status, "message": message, "status": grpc}})
