"""Gemini Batch API lines (``key``, ``request``): the request becomes our messages and sampling,
and is kept to send to Gemini untouched; ``NativeRequest.unconvertible`` names what a conversion
to another wire would lose. Both of Gemini's spellings (camelCase and snake_case) are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .._core.media import Media
from ._fields import JobFields, Sampling, maybe_json, sampling_of, stop_of, str_of
from ._model import Message, NativeRequest, Part
from ._readers import BadRow, Row

__all__ = ["parse_gemini_batch"]


def _camel(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    return d.get(camel, d.get(snake))


_GEMINI_CONFIG_KEYS = {
    "temperature",
    "maxOutputTokens",
    "max_output_tokens",
    "topP",
    "top_p",
    "stopSequences",
    "stop_sequences",
}
_GEMINI_REQUEST_KEYS = {
    "contents",
    "systemInstruction",
    "system_instruction",
    "generationConfig",
    "generation_config",
    "model",
}


def _gemini_parts(raw: Any, where: str) -> tuple[tuple[Part, ...], list[str]]:
    if not isinstance(raw, list):
        raise BadRow(f"{where}.parts must be a list")
    parts, lost = [], []
    for j, p in enumerate(raw):
        if not isinstance(p, Mapping):
            raise BadRow(f"{where}.parts[{j}] must be an object")
        if isinstance(p.get("text"), str):
            parts.append(Part(p["text"]))
            lost += [f"{where}.parts[{j}].{k}" for k in p if k != "text"]
        elif (inline := _camel(p, "inlineData", "inline_data")) is not None:
            parts.append(Part(media=_gemini_inline(inline, f"{where}.parts[{j}].inlineData")))
        elif (file := _camel(p, "fileData", "file_data")) is not None:
            # a Files API or Cloud Storage URI: sent to Gemini as it is, never converted
            uri = _camel(file, "fileUri", "file_uri") if isinstance(file, Mapping) else None
            if not isinstance(uri, str):
                raise BadRow(f"{where}.parts[{j}].fileData must be an object with 'fileUri'")
            parts.append(Part(media=Media(uri, "file")))
            lost.append(f"{where}.parts[{j}].fileData")
        else:
            lost.append(f"{where}.parts[{j}] ({', '.join(p) or 'empty'})")
    return tuple(parts), lost


def _gemini_inline(inline: Any, where: str) -> Media:
    """An ``inlineData {mimeType, data}`` part as a data: URI ref.
    https://ai.google.dev/api/caching#Blob"""
    if not isinstance(inline, Mapping):
        raise BadRow(f"{where} must be an object with 'mimeType' and 'data'")
    mime, data = _camel(inline, "mimeType", "mime_type"), inline.get("data")
    if not isinstance(mime, str) or not isinstance(data, str):
        raise BadRow(f"{where} must have a string 'mimeType' and base64 'data'")
    return Media(f"data:{mime};base64,{data}", "image" if mime.startswith("image/") else "file")


def _gemini_messages(req: Mapping[str, Any]) -> tuple[tuple[Message, ...], list[str]]:
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRow("request.contents must be a non-empty list of {role, parts}")
    messages: list[Message] = []
    lost: list[str] = []
    system = _camel(req, "systemInstruction", "system_instruction")
    if system is not None:
        if not isinstance(system, Mapping):
            raise BadRow("request.systemInstruction must be an object with 'parts'")
        parts, l2 = _gemini_parts(system.get("parts"), "request.systemInstruction")
        messages.append(Message("system", parts))
        lost += l2
    for i, c in enumerate(contents):
        if not isinstance(c, Mapping):
            raise BadRow(f"request.contents[{i}] must be an object")
        role = c.get("role", "user")
        if role not in ("user", "model"):
            raise BadRow(f"request.contents[{i}].role must be 'user' or 'model', got {role!r}")
        parts, l2 = _gemini_parts(c.get("parts"), f"request.contents[{i}]")
        messages.append(Message("user" if role == "user" else "assistant", parts))
        lost += l2
    return tuple(messages), lost


def _gemini_sampling(config: Mapping[str, Any]) -> Sampling:
    """generationConfig's parameters, checked under the names the other shapes use."""
    flat = {
        "temperature": config.get("temperature"),
        "max_tokens": _camel(config, "maxOutputTokens", "max_output_tokens"),
        "top_p": _camel(config, "topP", "top_p"),
    }
    stop = _camel(config, "stopSequences", "stop_sequences")
    return replace(sampling_of(flat), stop=stop_of(stop, "stopSequences"))


def parse_gemini_batch(row: Row) -> JobFields:
    """A Gemini Batch API line; its ``request`` is kept to send as it is."""
    req = maybe_json(row.get("request"))
    if not isinstance(req, Mapping):
        raise BadRow("Gemini batch line has no 'request' object")
    messages, lost = _gemini_messages(req)
    config = _camel(req, "generationConfig", "generation_config") or {}
    if not isinstance(config, Mapping):
        raise BadRow("request.generationConfig must be an object")
    sampling = _gemini_sampling(config)
    lost += [f"request.generationConfig.{k}" for k in config if k not in _GEMINI_CONFIG_KEYS]
    lost += [f"request.{k}" for k in req if k not in _GEMINI_REQUEST_KEYS]
    model = str_of(req, "model")
    model = model.removeprefix("models/") if model is not None else str_of(row, "model")
    native = NativeRequest("gemini", dict(req), tuple(lost))
    return JobFields(messages, model, sampling, native)
