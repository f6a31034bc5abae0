"""OpenAI's Responses API wire format, ``POST {base}/responses``: newer OpenAI models are offered
there only. https://platform.openai.com/docs/api-reference/responses/create

Request ``{model, instructions?, input, max_output_tokens?, temperature?, top_p?, reasoning?:
{effort}, text?: {format}, store: false}``: a job's system turns are ``instructions``, its other
turns ``input`` (a lone user text as a string, else messages whose parts are ``input_text``,
``input_image`` and ``input_file``). The answer's ``output`` holds items: ``message`` (its
``output_text`` parts are the text; a ``refusal`` part refuses), ``reasoning`` and others;
``status`` is ``completed``, or ``incomplete`` with ``incomplete_details.reason``
(``max_output_tokens``: recorded as chat's ``length``). ``usage.output_tokens`` counts the
reasoning tokens (``output_tokens_details.reasoning_tokens``), which OpenAI bills as output.
Errors are shaped as chat/completions's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._core.errors import PermanentJobError, RetryableError
from ..._core.media import Inline, inline_now
from ..._jobs import Job, Message
from ._base import (
    Answer,
    Completion,
    RequestSpec,
    count,
    error_object,
    json_body,
    status_said,
    str_or_none,
)
from ._openai import OpenAIProvider

__all__ = ["OpenAIResponses", "build_body"]

_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}
"""An incomplete answer's ``incomplete_details.reason`` as the finish reason chat records."""


def _content(m: Message, inline: Inline) -> str | list[dict[str, Any]]:
    """A turn's content: its text, or parts when it carries images or files.

    Images go as ``input_image`` (a URL as given, else a data: URI, with ``detail``), other files
    (PDFs) as ``input_file`` with ``file_data`` (a data: URI); either with ``file_id`` once
    uploaded. An
    assistant turn's text is an ``output_text`` part. https://platform.openai.com/docs/guides/images-vision?api-mode=responses,
    https://platform.openai.com/docs/guides/pdf-files?api-mode=responses"""
    if all(p.media is None for p in m.parts):
        return m.text
    text_type = "output_text" if m.role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for p in m.parts:
        media = p.media
        if media is None:
            if p.text:
                parts.append({"type": text_type, "text": p.text})
            continue
        if media.uploaded is not None:
            file_id, mime = media.uploaded
            if mime.startswith("image/"):
                parts.append(
                    {"type": "input_image", "file_id": file_id, "detail": media.detail or "auto"}
                )
            else:
                parts.append({"type": "input_file", "file_id": file_id})
            continue
        if media.kind == "image" and media.is_url:
            url = media.ref
        else:
            mime, data = inline(media)
            if not mime.startswith("image/"):
                uri = f"data:{mime};base64,{data}"
                parts.append({"type": "input_file", "filename": "file.pdf", "file_data": uri})
                continue
            url = f"data:{mime};base64,{data}"
        image: dict[str, Any] = {"type": "input_image", "image_url": url}
        image["detail"] = media.detail or "auto"
        parts.append(image)
    return parts


def build_body(job: Job, model: str, inline: Inline = inline_now) -> dict[str, Any]:
    """The Responses body for a job (a chat batch line's job is built from its turns: the line's
    own body is chat's). ``inline`` gives each local image's or file's data (read now, unless
    fingerprinting)."""
    system = [m for m in job.messages if m.role == "system"]
    turns = [m for m in job.messages if m.role != "system"]
    body: dict[str, Any] = {"model": model}
    if system:
        body["instructions"] = "\n\n".join(m.text for m in system)
    if len(turns) == 1 and turns[0].role == "user" and all(p.media is None for p in turns[0].parts):
        body["input"] = turns[0].text
    else:
        body["input"] = [{"role": m.role, "content": _content(m, inline)} for m in turns]
    if job.max_tokens is not None:
        body["max_output_tokens"] = job.max_tokens
    if job.temperature is not None:
        body["temperature"] = job.temperature
    if job.top_p is not None:
        body["top_p"] = job.top_p
    if job.reasoning_effort is not None:
        body["reasoning"] = {"effort": job.reasoning_effort}
    body["store"] = False  # nothing is read back later: the answer is kept in DIR
    return body


class OpenAIResponses(OpenAIProvider):
    """``POST {base}/responses`` with a Bearer key; errors as chat/completions's."""

    def build(self, job: Job, model: str, inline: Inline = inline_now) -> RequestSpec:
        return RequestSpec("responses", build_body(job, model, inline))

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body, response.status_code)
        try:
            status = body["status"]
            items = [i for i in body["output"] if i["type"] == "message"]
            parts = [p for i in items for p in i["content"]]
            refused = [str(p.get("refusal") or "") for p in parts if p["type"] == "refusal"]
            texts = [str_or_none(p["text"]) or "" for p in parts if p["type"] == "output_text"]
            usage: Mapping[str, Any] = body.get("usage") or {}
            details = body.get("incomplete_details") or {}
            reason = str_or_none(details.get("reason"))
            model = str_or_none(body.get("model"))
        except (KeyError, TypeError, AttributeError):
            if err := error_object(body):
                raise self._error(response, body, status_said(err)) from None
            raise _malformed("without output[]: not a Responses answer", response) from None
        if status == "failed" and (err := error_object(body)):
            raise self._error(response, body, status_said(err))
        if status not in ("completed", "incomplete"):
            raise _malformed(f"with status {status!r}, not completed", response)
        if refused:
            raise PermanentJobError(
                f"the model refused: {' '.join(refused)[:300]}", status=200, body=response.text
            )
        finish = "stop" if status == "completed" else _FINISH.get(reason or "", "incomplete")
        return Completion(
            text="".join(texts) if items else None,
            finish_reason=finish,
            input_tokens=count(usage.get("input_tokens")),
            output_tokens=count(usage.get("output_tokens")),
            model=model,
            raw=response.text,
        )


def _malformed(what: str, response: Answer) -> RetryableError:
    return RetryableError(f"HTTP 200 {what}", status=200, body=response.text[:500])
