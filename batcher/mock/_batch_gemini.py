"""Gemini's batch API in the mock: batchGenerateContent, its operations, and the Files API.

https://ai.google.dev/api/batch-api: ``POST /v1beta/models/{m}:batchGenerateContent`` with inline
requests or ``input_config.file_name`` (answered inline, or as a ``responsesFile``), ``GET
/v1beta/batches`` (``pageSize``, ``pageToken``), ``GET /v1beta/batches/{id}``, ``POST
/v1beta/batches/{id}:cancel``; the Files API's resumable upload (``POST /upload/v1beta/files``),
``GET /v1beta/files/{id}`` (a file's state) and ``GET /download/v1beta/files/{id}:download``.
``POST /v1beta/models/{m}:asyncBatchEmbedContent`` makes a batch of embeddings the same way
(https://ai.google.dev/gemini-api/docs/batch-mode#batch-embedding): each line one
``EmbedContentRequest``, answered by the mock's ``batchEmbedContents`` route as a one-input
request, and given back as an ``EmbedContentResponse`` (``{"embedding"}``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ._batch_store import Batch, BatchAPI, BatchStore
from ._wire import Request, Response, json_response

__all__ = ["GeminiBatches"]

_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 503: 14, 504: 4}
_GEMINI_BATCH = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
_GEMINI_OUTPUT = (
    "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
)
_EMBED = "asyncBatchEmbedContent"
"""The method that makes a batch of embeddings (kept as its ``Batch.endpoint``)."""
_EMBED_BATCH = "type.googleapis.com/google.ai.generativelanguage.v1beta.EmbedContentBatch"
_EMBED_OUTPUT = "type.googleapis.com/google.ai.generativelanguage.v1beta.EmbedContentBatchOutput"


class GeminiBatches(BatchAPI):
    """Gemini's batch routes: a batch of inline requests or of an uploaded file, answered
    inline or into a responses file (as it was made)."""

    wire = "gemini"
    running = "BATCH_STATE_RUNNING"
    completed = "BATCH_STATE_SUCCEEDED"
    expired = "BATCH_STATE_EXPIRED"
    cancelled = "BATCH_STATE_CANCELLED"
    expires_whole = True

    def __init__(self, store: BatchStore, *, omit_keys: bool = False) -> None:
        super().__init__(store)
        self.omit_keys = omit_keys
        """Answer Gemini inline responses without their metadata, as users report the service
        does: clients must match them by order."""
        self.uploads: dict[str, bytes] = {}  # resumable upload sessions not yet finalized
        self.types: dict[str, str] = {}  # upload session -> the MIME type its start declared
        self._sessions = 0  # sessions opened: numbers them (never reused, as uploads shrinks)

    async def handle(self, request: Request) -> Response | None:
        if request.path == "/upload/v1beta/files" and request.method == "POST":
            return self._upload(request)
        if request.path.startswith("/download/v1beta/files/") and request.method == "GET":
            name = request.path[len("/download/v1beta/") :].removesuffix(":download")
            data = self.store.files.get(name)
            if data is None:
                return _gemini_error(404, "NOT_FOUND", f"File {name} not found.")
            return Response(200, data, (("content-type", "application/jsonl"),))
        path = request.path.removeprefix("/v1")
        if not path.startswith("beta/"):
            return None
        path = path[len("beta/") :]
        if path.startswith("files/") and request.method == "GET":  # files.get: its state
            if path not in self.store.expires or self.store.clock() >= self.store.expires[path]:
                return _gemini_error(404, "NOT_FOUND", f"File {path} not found.")
            file = self._file(path, request.headers.get("host", "mock"))
            if file["state"] == "FAILED":
                file["error"] = {"code": 3, "message": "The video could not be processed."}
            return json_response(200, file)
        if path.startswith("models/") and path.endswith(":batchGenerateContent"):
            if request.method != "POST":
                return None
            return self._create(request, path[len("models/") : -len(":batchGenerateContent")])
        if path.startswith("models/") and path.endswith(f":{_EMBED}"):
            if request.method != "POST":
                return None
            model = path[len("models/") : -len(_EMBED) - 1]
            return self._create(request, model, endpoint=_EMBED)
        if path == "batches" and request.method == "GET":
            mine = self.mine()
            size = int(request.query.get("pageSize") or 50)
            start = int(request.query.get("pageToken") or 0)
            page = mine[start : start + size]
            for batch in page:
                await self.advance(batch)
            body: dict[str, Any] = {"operations": [self._op(b) for b in page]}
            if start + size < len(mine):
                body["nextPageToken"] = str(start + size)
            return json_response(200, body)
        if path.startswith("batches/"):
            name, _, action = path.partition(":")
            found = self.find(name)
            if found is None:
                return _gemini_error(404, "NOT_FOUND", f"Batch {name} not found.")
            if action == "cancel" and request.method == "POST":
                found.cancel = True
                await self.advance(found)
                return json_response(200, {})
            await self.advance(found)
            return json_response(200, self._op(found))
        return None

    def line_path(self, batch: Batch) -> str:
        if batch.endpoint == _EMBED:
            return f"/v1beta/models/{batch.model}:batchEmbedContents"
        return f"/v1beta/models/{batch.model}:generateContent"

    def line_body(self, batch: Batch, body: dict[str, Any]) -> dict[str, Any]:
        """An embeddings line as a one-input ``batchEmbedContents`` request (its model the
        batch's unless it names one)."""
        if batch.endpoint == _EMBED:
            return {"requests": [{"model": f"models/{batch.model}", **body}]}
        return body

    def line_answer(self, batch: Batch, status: int, answer: Any) -> Any:
        """A ``batchEmbedContents`` answer of one input as the ``EmbedContentResponse`` an
        embeddings batch gives."""
        if batch.endpoint == _EMBED and status == 200 and isinstance(answer, dict):
            (embedding,) = answer["embeddings"]
            return {"embedding": embedding}
        return answer

    def _upload(self, request: Request) -> Response:
        """The Files API's resumable upload: ``start`` opens a session, ``upload, finalize``
        sends the bytes to it (https://ai.google.dev/api/files)."""
        if not request.headers.get("x-goog-api-key"):
            return _gemini_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."
            )
        command = request.headers.get("x-goog-upload-command", "")
        if command == "start":
            self._sessions += 1
            session = f"upload-{self._sessions}"
            self.uploads[session] = b""
            self.types[session] = request.headers.get("x-goog-upload-header-content-type", "")
            host = request.headers.get("host", "mock")
            url = f"http://{host}/upload/v1beta/files?upload_id={session}"
            return json_response(
                200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            )
        session = request.query.get("upload_id", "")
        if session not in self.uploads or "finalize" not in command:
            return _gemini_error(400, "INVALID_ARGUMENT", "no such upload session")
        del self.uploads[session]
        declared = self.types.pop(session, "")
        files = self.store.files
        name = f"files/mock{len(files) + 1:06d}"
        # a batch's input lines, or a file a request names (by its uri, in fileData)
        mime = None if declared in ("", "application/jsonl") else declared
        self.store.keep(name, request.body, mime)
        file = self._file(name, request.headers.get("host", "mock"))
        return json_response(200, {"file": file}, {"x-goog-upload-status": "final"})

    def _file(self, name: str, host: str) -> dict[str, Any]:
        """The ``File`` resource of ``name`` (https://ai.google.dev/api/files#File)."""
        store = self.store
        expires = store.expires[name]
        return {
            "name": name,
            "mimeType": store.mimes.get(name, "application/jsonl"),
            "sizeBytes": str(len(store.files[name])),
            "createTime": _iso(expires - store.file_ttl),
            "expirationTime": _iso(expires),
            "uri": f"http://{host}/v1beta/{name}",
            "state": store.state(name),
        }

    def _create(
        self, request: Request, model: str, endpoint: str = "batchGenerateContent"
    ) -> Response:
        if not request.headers.get("x-goog-api-key"):
            return _gemini_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."
            )
        store = self.store
        file_name = None
        try:
            batch = json.loads(request.body)["batch"]
            config = batch["input_config"]
            if "file_name" in config:
                file_name = str(config["file_name"])
                data = store.input(file_name)
                if data is None:  # never uploaded, or expired (Gemini keeps a file 48 hours)
                    why = (
                        f"You do not have permission to access the File {file_name} or it may "
                        "not exist."
                    )
                    return _gemini_error(403, "PERMISSION_DENIED", why)
                lines = [json.loads(x) for x in data.splitlines() if x.strip()]
                requests = [(str(x["key"]), dict(x["request"])) for x in lines]
            else:
                inline = config["requests"]["requests"]
                requests = [(str(r["metadata"]["key"]), dict(r["request"])) for r in inline]
        except (json.JSONDecodeError, KeyError, TypeError):
            return _gemini_error(400, "INVALID_ARGUMENT", "the batch request is malformed")
        tag = str(batch.get("display_name") or "")
        item = Batch(
            id=f"batches/mock{len(store.batches) + 1:06d}",
            wire="gemini",
            tag=tag,
            model=model,
            created=store.clock(),
            lines=requests,
            headers={"x-goog-api-key": request.headers.get("x-goog-api-key", "")},
            state="BATCH_STATE_PENDING",
            input_file_id=file_name,
            endpoint=endpoint,
        )
        store.add(item)
        return json_response(200, self._op(item))

    def _op(self, batch: Batch) -> dict[str, Any]:
        ok = sum(1 for _, status, _ in batch.answers if status == 200)
        done = batch.state in self.final
        embeds = batch.endpoint == _EMBED
        meta = {
            "@type": _EMBED_BATCH if embeds else _GEMINI_BATCH,
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
            output = _EMBED_OUTPUT if embeds else _GEMINI_OUTPUT
            op["response"] = {"@type": output, "responsesFile": batch.output_file_id}
        elif answered:
            items = []
            for key, status, body in batch.answers:
                item = _item(status, body)
                if not self.omit_keys:
                    item["metadata"] = {"key": key}
                items.append(item)
            inlined = {"inlinedResponses": items}
            output = _EMBED_OUTPUT if embeds else _GEMINI_OUTPUT
            op["response"] = {"@type": output, "inlinedResponses": inlined}
        return op

    def keep_answers(self, batch: Batch) -> None:
        """The responses file of a batch made from a file: one ``{"key", ...}`` a line. (A batch
        of inline requests is answered inline, in its operation.)"""
        if batch.input_file_id is None:
            return
        lines = [{"key": key, **_item(s, b)} for key, s, b in batch.answers]
        files = self.store.files
        name = f"files/mock{len(files) + 1:06d}"
        files[name] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        batch.output_file_id = name


def _item(status: int, body: Any) -> dict[str, Any]:
    """One answer as a batch gives it: the response, or a google.rpc Status."""
    if status == 200:
        return {"response": body}
    error = (body or {}).get("error") or {}
    return {"error": {"code": _GRPC.get(status, 2), "message": error.get("message", "")}}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _gemini_error(status: int, grpc: str, message: str) -> Response:
    return json_response(status, {"error": {"code": status, "message": message, "status": grpc}})
