"""OpenAI's Responses API wire format, ``POST /v1/responses``: ``input`` and ``instructions`` in,
``output`` items out. https://platform.openai.com/docs/api-reference/responses/create

Keys, models, errors and limits are chat's (``OpenAIChat``). A reasoning model thinks before it
answers: a request naming ``reasoning.effort``, or to an ``o*``/``gpt-5*`` model (medium), spends
a fixed number of reasoning tokens by effort, deterministic so a test can check them; they come
out of ``max_output_tokens`` first, count in ``usage.output_tokens`` and show in
``output_tokens_details.reasoning_tokens``. An answer cut by ``max_output_tokens`` is
``status: "incomplete"`` with ``incomplete_details.reason: "max_output_tokens"``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._media import BadMedia, Described, describe_data_uri, describe_url
from ._named_files import describe_named
from ._openai import OpenAIChat
from ._structured import schema_of_request, with_schema
from ._wire import Call, Refusal, Reply, Request, Response, json_object, json_response

__all__ = ["REASONING_TOKENS", "OpenAIResponses"]

REASONING_TOKENS = {"low": 16, "medium": 64, "high": 256}
"""The reasoning tokens the mock spends by ``reasoning.effort``."""

_REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
"""Model name prefixes that reason even when a request names no effort (at medium)."""


def _media(p: Mapping[str, Any]) -> Described:
    """An ``input_image`` or ``input_file`` part, checked; ``BadMedia`` if it is not valid."""
    kind = p.get("type")
    if kind == "input_image":
        url = p.get("image_url")
        detail = p.get("detail")
        if "file_id" in p:
            return describe_named(
                p["file_id"], "openai", detail if isinstance(detail, str) else None
            )
        if not isinstance(url, str):
            raise BadMedia("input_image.image_url is required (or a file_id)")
        if url.startswith("data:"):
            return describe_data_uri(url, "openai", detail if isinstance(detail, str) else None)
        if url.startswith(("http://", "https://")):
            return describe_url(url, "openai")
        raise BadMedia("input_image.image_url must be an http(s) URL or a data: URI")
    if kind == "input_file":
        if "file_id" in p:
            return describe_named(p["file_id"], "openai")
        data = p.get("file_data")
        if not isinstance(data, str):
            raise BadMedia("input_file.file_data is required (or a file_id)")
        return describe_data_uri(data, "openai", None)
    raise BadMedia(f"unknown content part type {kind!r}")


def _turn(content: Any) -> tuple[str, int]:
    """One input message's text and media tokens: a string, or a list of parts."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise BadMedia("a message's content must be a string or a list of parts")
    texts, tokens = [], 0
    for p in content:
        if not isinstance(p, Mapping):
            raise BadMedia("each content part must be an object")
        if p.get("type") in ("input_text", "output_text"):
            texts.append(str(p.get("text", "")))
            continue
        described = _media(p)
        texts.append(described.text)
        tokens += described.tokens
    return " ".join(t for t in texts if t), tokens


def _effort(body: Mapping[str, Any], model: str) -> str | None:
    """The reasoning effort a request asks for (or its model's default), or None."""
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    if effort is None and model.startswith(_REASONING_MODELS):
        return "medium"
    if effort is not None and effort not in REASONING_TOKENS:
        raise ValueError(f"Invalid value for reasoning.effort: {effort!r}")
    return effort


class OpenAIResponses(OpenAIChat):
    """``POST /v1/responses`` as OpenAI answers it."""

    def parse(self, request: Request) -> Call:
        key = self.check_key(request)
        body = json_object(request.body, self.invalid)
        model, raw = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            raise Refusal(self.invalid("you must provide a model parameter"))
        self.check_model(model)
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            raise Refusal(self.invalid("'input' must be a string or a non-empty array"))
        try:
            read = []
            for item in items:
                if not isinstance(item, Mapping) or item.get("role") not in (
                    "user",
                    "assistant",
                    "system",
                    "developer",
                ):
                    raise BadMedia("each input item must be a message with a role")
                read.append((item["role"], *_turn(item.get("content"))))
            effort = _effort(body, model)
        except ValueError as e:  # BadMedia among them
            raise Refusal(self.invalid(str(e))) from None
        instructions = body.get("instructions")
        texts = [instructions] if isinstance(instructions, str) else []
        users = [text for role, text, _ in read if role == "user"]
        limit = body.get("max_output_tokens")
        schema = schema_of_request(body)
        return Call(
            model=model,
            key=key,
            prompt=with_schema("\n".join([*texts, *(text for _, text, _ in read)]), schema),
            last_user=users[-1] if users else "",
            max_tokens=limit if isinstance(limit, int) else None,
            media_tokens=sum(tokens for _, _, tokens in read),
            schema=schema,
            reasoning_tokens=REASONING_TOKENS[effort] if effort is not None else 0,
        )

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        output: list[dict[str, Any]] = []
        if reply.reasoning_tokens:
            output.append({"id": f"rs_mock{serial:08d}", "type": "reasoning", "summary": []})
        if reply.text or not reply.cut:
            part = {"type": "output_text", "text": reply.text, "annotations": []}
            status = "incomplete" if reply.cut else "completed"
            output.append(
                {
                    "id": f"msg_mock{serial:08d}",
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [part],
                }
            )
        body = {
            "id": f"resp_mock{serial:08d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if reply.cut else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if reply.cut else None,
            "model": call.model,
            "output": output,
            "usage": {
                "input_tokens": reply.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": reply.output_tokens,
                "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                "total_tokens": reply.input_tokens + reply.output_tokens,
            },
        }
        return json_response(200, body, {"x-request-id": f"req_mock{serial:08d}", **headers})
