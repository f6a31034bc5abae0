"""OpenAI's shapes of a row: a chat ``messages`` list and an OpenAI Batch API line.

Content parts become our ``Part``s (text, and images, audio and files as ``Media`` refs); what a
conversion would lose is listed, so a ``messages`` row can refuse it and a batch line, sent to
OpenAI untouched, can name it in ``NativeRequest.unconvertible``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .._core.media import Media
from ._fields import Base, JobFields, count_of, maybe_json, media_ref, sampling_of, str_of
from ._model import Message, NativeRequest, Part, Role
from ._readers import BadRow, Row

__all__ = ["openai_messages", "parse_openai_batch"]

_OPENAI_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
}


def _openai_media(p: Mapping[str, Any], base: Base, where: str) -> Media | None:
    """An ``image_url``, ``input_audio`` or ``file`` content part as a ref; None for another type.

    https://platform.openai.com/docs/api-reference/chat/create (messages[].content parts)."""
    kind = p.get("type")
    if kind == "image_url":
        image = p.get("image_url")
        if isinstance(image, str):
            image = {"url": image}
        if not isinstance(image, Mapping):
            raise BadRow(f"{where}.image_url must be an object with 'url'")
        return media_ref(image, base, "image", f"{where}.image_url")
    if kind == "input_audio":
        audio = p.get("input_audio")
        if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str):
            raise BadRow(f"{where}.input_audio must be an object with 'data' and 'format'")
        fmt = audio.get("format")
        if fmt not in ("wav", "mp3"):
            raise BadRow(f"{where}.input_audio.format must be wav or mp3, got {fmt!r}")
        mime = "audio/wav" if fmt == "wav" else "audio/mpeg"
        return Media(f"data:{mime};base64,{audio['data']}", "file")
    if kind == "file":
        file = p.get("file")
        data = file.get("file_data") if isinstance(file, Mapping) else None
        if not isinstance(data, str):
            raise BadRow(f"{where}.file must carry 'file_data' (a data: URI); file_id is not sent")
        return media_ref(data, base, "file", f"{where}.file.file_data")
    return None


def _openai_content(
    content: Any, where: str, base: Base = None
) -> tuple[tuple[Part, ...], list[str]]:
    """OpenAI message content (a string or a list of typed parts) -> our parts, and what is lost."""
    if isinstance(content, str):
        return (Part(content),), []
    if isinstance(content, list):
        parts, lost = [], []
        for j, p in enumerate(content):
            if not isinstance(p, Mapping):
                raise BadRow(f"{where}: each content part must be an object")
            if p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(Part(p["text"]))
            elif (media := _openai_media(p, base, f"{where}.content[{j}]")) is not None:
                parts.append(Part(media=media))
            else:
                lost.append(f"{where} part of type {p.get('type')!r}")
        return tuple(parts), lost
    raise BadRow(f"{where}: 'content' must be a string or a list of parts")


def openai_messages(raw: Any, base: Base = None) -> tuple[tuple[Message, ...], list[str]]:
    """A chat ``messages`` list -> our messages, and what they hold that a conversion loses."""
    raw = maybe_json(raw)
    if not isinstance(raw, list) or not raw:
        raise BadRow("'messages' must be a non-empty list of {role, content}")
    out, lost = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise BadRow(f"messages[{i}] must be an object")
        given = m.get("role")
        role = _OPENAI_ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise BadRow(f"messages[{i}].role must be system, user or assistant, got {given!r}")
        if "content" not in m or m["content"] is None:
            raise BadRow(f"messages[{i}] has no 'content'")
        parts, l2 = _openai_content(m["content"], f"messages[{i}]", base)
        lost += l2
        lost += [f"messages[{i}].{k}" for k in m if k not in ("role", "content")]
        out.append(Message(role, parts))
    return tuple(out), lost


_OPENAI_BODY_KEYS = {
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "stop",
    "reasoning_effort",
}


def parse_openai_batch(row: Row, base: Base) -> JobFields:
    """An OpenAI Batch API line (``custom_id``, ``body``); its body is kept to send as it is."""
    url = row.get("url", "/v1/chat/completions")
    if url not in ("/v1/chat/completions", "/chat/completions"):
        raise BadRow(f"OpenAI batch line for {url!r}; only /v1/chat/completions is supported")
    method = row.get("method", "POST")
    if method != "POST":
        raise BadRow(f"OpenAI batch line with method {method!r}; expected POST")
    body = maybe_json(row.get("body"))
    if not isinstance(body, Mapping):
        raise BadRow("OpenAI batch line has no 'body' object")
    messages, lost = openai_messages(body.get("messages"), base)
    for m in messages:
        for p in m.parts:
            if p.media is not None and not (p.media.is_url or p.media.is_data_uri):
                raise BadRow(
                    f"an OpenAI batch line is sent as it is: image {p.media.ref!r} must be a URL "
                    "or a data: URI (or write the job as a 'messages' line)"
                )
    sampling = sampling_of(body)
    if body.get("max_completion_tokens") is not None:
        sampling = replace(sampling, max_tokens=count_of(body, "max_completion_tokens"))
    lost += [f"body.{k}" for k in body if k not in _OPENAI_BODY_KEYS]
    native = NativeRequest("openai", dict(body), tuple(lost))
    return JobFields(messages, str_of(body, "model"), sampling, native)
