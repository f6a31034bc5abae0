"""Line formats: which of the five shapes a row has, and the parser that turns it into a job.

The shapes are a prompt, a chat ``messages`` list, a ``text`` to embed, an OpenAI Batch API line
and a Gemini Batch API line; a ``ColumnOptions`` replaces them with a prompt column or template.
Each parser returns a ``JobFields``; the prompt, messages, text and column shapes are parsed here,
OpenAI's in ``_openai_rows`` and Gemini's in ``_gemini_rows``. Native batch lines also keep their
body, so it is sent to its own provider untouched, and ``NativeRequest.unconvertible`` names what
a conversion to the other would lose. Every check raises ``BadRow`` with the message a user sees.
"""

from __future__ import annotations

from dataclasses import replace

from .._core.media import Media
from ._columns import ColumnOptions
from ._fields import (
    Base,
    ImageRequest,
    JobFields,
    count_of,
    media_ref,
    media_refs,
    row_id,
    sampling_of,
    str_of,
)
from ._gemini_rows import parse_gemini_batch
from ._model import Message, Part
from ._openai_rows import openai_messages, parse_openai_batch
from ._readers import BadRow, Row

__all__ = ["parse_row"]


def parse_row(
    row: Row, *, position_id: str, columns: ColumnOptions, base: Base = None
) -> tuple[str, JobFields]:
    """One row -> its job's id and fields; raises ``BadRow`` naming the problem and the id.

    Relative paths of images and files are taken from ``base`` (the job file's folder; None: the
    working directory)."""
    own_id: str | None = None
    try:
        if columns.id_column is not None:
            own_id = row_id(row, columns.id_column)
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


def _parse_shape(row: Row, columns: ColumnOptions, base: Base) -> tuple[JobFields, str | None]:
    """The row's fields and its own id (None: use the row's position), by its shape."""
    if row.keys() <= _PLAIN_PROMPT and not columns.maps_prompt:
        prompt, model = row.get("prompt"), row.get("model")
        if type(prompt) is str and (model is None or type(model) is str):
            # the commonest line, {id, prompt, model}, without the general path's lookups
            return JobFields((Message("user", (Part(prompt),)),), model), row_id(row, "id")
    if columns.maps_prompt:
        return _parse_columns(row, columns, base), row_id(row, "id")
    if "custom_id" in row or "body" in row:
        return parse_openai_batch(row, base), row_id(row, "custom_id")
    if "request" in row:
        return parse_gemini_batch(row), row_id(row, "key")
    if "messages" in row:
        return _parse_messages(row, base), row_id(row, "id")
    if "prompt" in row:
        return _parse_prompt(row, base), row_id(row, "id")
    if "text" in row:
        return _parse_text(row), row_id(row, "id")
    keys = ", ".join(sorted(row)[:8]) or "none"
    raise BadRow(
        "unknown shape: expected 'prompt', 'messages', 'text' (to embed), an OpenAI batch line "
        "('custom_id', 'body') or a Gemini batch line ('key', 'request'); this line has keys: "
        f"{keys}"
    )


def _any_id(row: Row) -> str | None:
    """The row's id by any of the shapes' keys, to name it in a problem; None if it has none."""
    for key in ("id", "custom_id", "key"):
        v = row.get(key)
        if isinstance(v, str | int) and not isinstance(v, bool):
            return str(v)
    return None


# --- prompt, messages and column mapping ----------------------------------------------------------


def _user(prompt: str, media: tuple[Media, ...] = ()) -> Message:
    return Message("user", (Part(prompt), *(Part(media=m) for m in media)))


def _image_request(row: Row) -> ImageRequest:
    return ImageRequest(
        n=count_of(row, "n"), size=str_of(row, "size"), quality=str_of(row, "quality")
    )


def _parse_prompt(row: Row, base: Base) -> JobFields:
    prompt = str_of(row, "prompt")
    if prompt is None:
        raise BadRow("missing 'prompt'")
    media = media_refs(row, "images", base, "image") + media_refs(row, "files", base, "file")
    turns = [_user(prompt, media)]
    system = str_of(row, "system")
    if system is not None:
        turns.insert(0, Message("system", (Part(system),)))
    return JobFields(
        tuple(turns), str_of(row, "model"), sampling_of(row), image=_image_request(row)
    )


def _parse_text(row: Row) -> JobFields:
    """An embedding job, ``{"id", "text", "model"?, "task_type"?}``: the text to embed."""
    text = str_of(row, "text")
    if text is None:
        raise BadRow("missing 'text'")
    return JobFields((_user(text),), str_of(row, "model"), task_type=str_of(row, "task_type"))


def _parse_messages(row: Row, base: Base) -> JobFields:
    messages, lost = openai_messages(row["messages"], base)
    if lost:
        raise BadRow(f"'messages' holds what batcher cannot send yet: {', '.join(lost)}")
    return JobFields(messages, str_of(row, "model"), sampling_of(row), image=_image_request(row))


def _column_media(row: Row, column: str, base: Base) -> tuple[Media, ...]:
    """The images of ``--image-column``: bytes, a path or URL, or a list of either; null: none."""
    if column not in row:
        raise BadRow(f"no column {column!r}")
    raw = row[column]
    if raw is None:
        return ()
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    return tuple(media_ref(v, base, "image", f"column {column!r}") for v in items if v is not None)


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


def _parse_columns(row: Row, columns: ColumnOptions, base: Base) -> JobFields:
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
