"""Line formats: which of the four shapes a row has, and the parser that turns it into a job.

The shapes are a prompt, a chat ``messages`` list, an OpenAI Batch API line and a Gemini Batch API
line; a ``ColumnOptions`` replaces them with a prompt column or template. Each parser returns a
``JobFields``; native batch lines also keep their body, so it is sent to its own provider
untouched, and ``NativeRequest.unconvertible`` names what a conversion to the other would lose.
Every check raises ``BadRow`` with the message a user sees.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._core.media import Media, MediaKind
from ._columns import ColumnOptions
from ._model import Job, Message, NativeRequest, Part, Role
from ._readers import BadRow, Row

__all__ = ["JobFields", "Sampling", "parse_row"]

_OPENAI_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system role
    "user": "user",
    "assistant": "assistant",
}


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampling parameters a row sets; None (or no stop) leaves the provider's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What an image-generation job asks for beyond its prompt; None leaves the default."""

    n: int | None = None
    size: str | None = None
    quality: str | None = None


@dataclass(frozen=True, slots=True)
class JobFields:
    """What one row asks for: a job without its id and without the place it was read from."""

    messages: tuple[Message, ...]
    model: str | None = None
    sampling: Sampling = Sampling()
    native: NativeRequest | None = None
    image: ImageRequest = ImageRequest()

    def job(self, job_id: str, *, source: str, default_model: str | None) -> Job:
        """The job these fields make; a row that names no model gets ``default_model``."""
        s = self.sampling
        return Job(
            id=job_id,
            messages=self.messages,
            model=self.model or default_model,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            top_p=s.top_p,
            stop=s.stop,
            native=self.native,
            source=source,
            n=self.image.n,
            size=self.image.size,
            quality=self.image.quality,
        )


def parse_row(
    row: Row, *, position_id: str, columns: ColumnOptions, base: Path | None = None
) -> tuple[str, JobFields]:
    """One row -> its job's id and fields; raises ``BadRow`` naming the problem and the id.

    Relative paths of images and files are taken from ``base`` (the job file's folder; None: the
    working directory)."""
    own_id: str | None = None
    try:
        if columns.id_column is not None:
            own_id = _row_id(row, columns.id_column)
            if own_id is None:
                raise BadRow(f"id column {columns.id_column!r} is missing or null")
        fields, shape_id = _parse_shape(row, columns, base)
        if columns.image_column is not None:
            fields = _add_media(fields, _column_media(row, columns.image_column, base))
    except BadRow as e:
        if e.job_id is None:
            e.job_id = own_id or _any_id(row)
        raise
    return own_id or shape_id or position_id, fields


_PLAIN_PROMPT = frozenset({"id", "prompt", "model"})


def _parse_shape(
    row: Row, columns: ColumnOptions, base: Path | None
) -> tuple[JobFields, str | None]:
    """The row's fields and its own id (None: use the row's position), by its shape."""
    if row.keys() <= _PLAIN_PROMPT and not columns.maps_prompt:
        prompt, model = row.get("prompt"), row.get("model")
        if type(prompt) is str and (model is None or type(model) is str):
            # the commonest line, {id, prompt, model}, without the general path's lookups
            return JobFields((Message("user", (Part(prompt),)),), model), _row_id(row, "id")
    if columns.maps_prompt:
        return _parse_columns(row, columns, base), _row_id(row, "id")
    if "custom_id" in row or "body" in row:
        return _parse_openai_batch(row, base), _row_id(row, "custom_id")
    if "request" in row:
        return _parse_gemini_batch(row), _row_id(row, "key")
    if "messages" in row:
        return _parse_messages(row, base), _row_id(row, "id")
    if "prompt" in row:
        return _parse_prompt(row, base), _row_id(row, "id")
    keys = ", ".join(sorted(row)[:8]) or "none"
    raise BadRow(
        "unknown shape: expected 'prompt', 'messages', an OpenAI batch line ('custom_id', 'body') "
        f"or a Gemini batch line ('key', 'request'); this line has keys: {keys}"
    )


# --- one field of a row or of a JSON object in it -------------------------------------------------


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise BadRow(f"{key!r} must be a string, got {type(v).__name__}")
    return v


def _number(obj: Mapping[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRow(f"{key!r} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise BadRow(f"{key!r} must be a finite number, got {v}")
    return float(v)


def _int(obj: Mapping[str, Any], key: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise BadRow(f"{key!r} must be a positive integer, got {v!r}")
    return v


def _stop(v: Any, key: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list | tuple) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise BadRow(f"{key!r} must be a string or a list of strings")


def _sampling(obj: Mapping[str, Any]) -> Sampling:
    return Sampling(
        temperature=_number(obj, "temperature"),
        max_tokens=_int(obj, "max_tokens"),
        top_p=_number(obj, "top_p"),
        stop=_stop(obj.get("stop"), "stop"),
    )


def _row_id(row: Row, key: str) -> str | None:
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise BadRow(f"{key!r} must be a string or an integer, got {type(v).__name__}")
    s = str(v)
    if not s:
        raise BadRow(f"{key!r} is empty")
    return s


def _any_id(row: Row) -> str | None:
    """The row's id by any of the shapes' keys, to name it in a problem; None if it has none."""
    for key in ("id", "custom_id", "key"):
        v = row.get(key)
        if isinstance(v, str | int) and not isinstance(v, bool):
            return str(v)
    return None


def _maybe_json(v: Any) -> Any:
    """Parquet columns may hold nested values as JSON strings; accept both."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


# --- prompt, messages and column mapping ----------------------------------------------------------


def _user(prompt: str, media: tuple[Media, ...] = ()) -> Message:
    return Message("user", (Part(prompt), *(Part(media=m) for m in media)))


def _ref(value: Any, base: Path | None, kind: MediaKind, where: str) -> Media:
    """One image or file reference: a path (relative to ``base``), an http(s) URL or a data: URI,
    or an object ``{"url": REF, "detail": "low"|"high"|"auto"}``."""
    detail = None
    if isinstance(value, Mapping):
        detail = value.get("detail")
        if detail is not None and detail not in ("low", "high", "auto"):
            raise BadRow(f"{where}.detail must be low, high or auto, got {detail!r}")
        value = value.get("url", value.get("path"))
    if isinstance(value, bytes | bytearray):
        return Media("<bytes>", kind, detail, bytes(value))
    if not isinstance(value, str) or not value:
        raise BadRow(f"{where} must be a path, an http(s) URL or a data: URI")
    if value.startswith(("http://", "https://", "data:")):
        return Media(value, kind, detail)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Media(os.path.abspath(path), kind, detail)


def _refs(row: Row, key: str, base: Path | None, kind: MediaKind) -> tuple[Media, ...]:
    """The refs listed under ``key`` (one ref or a list of them); none if the key is absent."""
    raw = _maybe_json(row.get(key))
    if raw is None:
        return ()
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    return tuple(_ref(v, base, kind, f"{key}[{i}]") for i, v in enumerate(items))


def _image_request(row: Row) -> ImageRequest:
    return ImageRequest(n=_int(row, "n"), size=_str(row, "size"), quality=_str(row, "quality"))


def _parse_prompt(row: Row, base: Path | None) -> JobFields:
    prompt = _str(row, "prompt")
    if prompt is None:
        raise BadRow("missing 'prompt'")
    media = _refs(row, "images", base, "image") + _refs(row, "files", base, "file")
    turns = [_user(prompt, media)]
    system = _str(row, "system")
    if system is not None:
        turns.insert(0, Message("system", (Part(system),)))
    return JobFields(tuple(turns), _str(row, "model"), _sampling(row), image=_image_request(row))


def _parse_messages(row: Row, base: Path | None) -> JobFields:
    messages, lost = _openai_messages(row["messages"], base)
    if lost:
        raise BadRow(f"'messages' holds what batcher cannot send yet: {', '.join(lost)}")
    return JobFields(messages, _str(row, "model"), _sampling(row), image=_image_request(row))


def _column_media(row: Row, column: str, base: Path | None) -> tuple[Media, ...]:
    """The images of ``--image-column``: bytes, a path or URL, or a list of either; null: none."""
    if column not in row:
        raise BadRow(f"no column {column!r}")
    raw = row[column]
    if raw is None:
        return ()
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    return tuple(_ref(v, base, "image", f"column {column!r}") for v in items if v is not None)


def _add_media(fields: JobFields, media: tuple[Media, ...]) -> JobFields:
    """``fields`` with ``media`` added to the last user turn (the column of ``--image-column``)."""
    if not media:
        return fields
    if fields.native is not None:
        raise BadRow("--image-column adds images to prompts, not to batch API lines")
    turns = list(fields.messages)
    users = [i for i, m in enumerate(turns) if m.role == "user"]
    if not users:
        raise BadRow("no user message to add the images of --image-column to")
    last = users[-1]
    turns[last] = Message("user", (*turns[last].parts, *(Part(media=m) for m in media)))
    return replace(fields, messages=tuple(turns))


def _parse_columns(row: Row, columns: ColumnOptions, base: Path | None) -> JobFields:
    if columns.prompt_column is not None:
        if columns.prompt_column not in row:
            raise BadRow(f"no column {columns.prompt_column!r}")
        prompt = row[columns.prompt_column]
        if not isinstance(prompt, str):
            raise BadRow(f"column {columns.prompt_column!r} must be a string, got {prompt!r}")
    else:
        assert columns.prompt_template is not None
        for col in columns.template_fields:
            if col not in row:
                raise BadRow(f"the template names column {col!r}, which this row does not have")
            if row[col] is None:
                raise BadRow(f"column {col!r} is null")
        prompt = columns.prompt_template.format_map(row)
    return JobFields((_user(prompt),))


# --- OpenAI: chat messages and Batch API lines ----------------------------------------------------


def _openai_media(p: Mapping[str, Any], base: Path | None, where: str) -> Media | None:
    """An ``image_url``, ``input_audio`` or ``file`` content part as a ref; None for another type.

    https://platform.openai.com/docs/api-reference/chat/create (messages[].content parts)."""
    kind = p.get("type")
    if kind == "image_url":
        image = p.get("image_url")
        if isinstance(image, str):
            image = {"url": image}
        if not isinstance(image, Mapping):
            raise BadRow(f"{where}.image_url must be an object with 'url'")
        return _ref(image, base, "image", f"{where}.image_url")
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
        return _ref(data, base, "file", f"{where}.file.file_data")
    return None


def _openai_content(
    content: Any, where: str, base: Path | None = None
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


def _openai_messages(raw: Any, base: Path | None = None) -> tuple[tuple[Message, ...], list[str]]:
    raw = _maybe_json(raw)
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
}


def _parse_openai_batch(row: Row, base: Path | None) -> JobFields:
    url = row.get("url", "/v1/chat/completions")
    if url not in ("/v1/chat/completions", "/chat/completions"):
        raise BadRow(f"OpenAI batch line for {url!r}; only /v1/chat/completions is supported")
    method = row.get("method", "POST")
    if method != "POST":
        raise BadRow(f"OpenAI batch line with method {method!r}; expected POST")
    body = _maybe_json(row.get("body"))
    if not isinstance(body, Mapping):
        raise BadRow("OpenAI batch line has no 'body' object")
    messages, lost = _openai_messages(body.get("messages"), base)
    for m in messages:
        for p in m.parts:
            if p.media is not None and not (p.media.is_url or p.media.is_data_uri):
                raise BadRow(
                    f"an OpenAI batch line is sent as it is: image {p.media.ref!r} must be a URL "
                    "or a data: URI (or write the job as a 'messages' line)"
                )
    sampling = _sampling(body)
    if body.get("max_completion_tokens") is not None:
        sampling = replace(sampling, max_tokens=_int(body, "max_completion_tokens"))
    lost += [f"body.{k}" for k in body if k not in _OPENAI_BODY_KEYS]
    native = NativeRequest("openai", dict(body), tuple(lost))
    return JobFields(messages, _str(body, "model"), sampling, native)


# --- Gemini Batch API lines -----------------------------------------------------------------------


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
    return replace(_sampling(flat), stop=_stop(stop, "stopSequences"))


def _parse_gemini_batch(row: Row) -> JobFields:
    req = _maybe_json(row.get("request"))
    if not isinstance(req, Mapping):
        raise BadRow("Gemini batch line has no 'request' object")
    messages, lost = _gemini_messages(req)
    config = _camel(req, "generationConfig", "generation_config") or {}
    if not isinstance(config, Mapping):
        raise BadRow("request.generationConfig must be an object")
    sampling = _gemini_sampling(config)
    lost += [f"request.generationConfig.{k}" for k in config if k not in _GEMINI_CONFIG_KEYS]
    lost += [f"request.{k}" for k in req if k not in _GEMINI_REQUEST_KEYS]
    model = _str(req, "model")
    model = model.removeprefix("models/") if model is not None else _str(row, "model")
    native = NativeRequest("gemini", dict(req), tuple(lost))
    return JobFields(messages, model, sampling, native)
