"""Jobs: the normalised request model, and the streaming readers for JSONL, JSONL.gz and Parquet.

Every input line (or Parquet row) is one job in one of four shapes, detected per line: a prompt, a
chat ``messages`` list, an OpenAI Batch API line or a Gemini Batch API line. All four become a
``Job``: messages made of parts, plus sampling parameters. Native batch lines also keep their body,
so they are sent to their own provider untouched; ``NativeRequest.unconvertible`` names what a
conversion to the other provider would lose.
"""

from __future__ import annotations

import gzip
import json
import string
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from ._errors import InputError, InputProblem, UsageError
from ._idset import duplicates, id_hash

__all__ = [
    "ColumnMapping",
    "Job",
    "JobSource",
    "Message",
    "NativeRequest",
    "Part",
    "ProviderName",
]

ProviderName: TypeAlias = Literal["openai", "gemini"]
Role: TypeAlias = Literal["system", "user", "assistant"]

_ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})
_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
MAX_PROBLEMS = 20
"""How many input problems one error lists in full before it only counts the rest."""


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a message. Text today; the model is open to images later."""

    text: str


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A provider's own request body, from a batch API line, sent as it is to that provider."""

    provider: ProviderName
    body: Mapping[str, Any]
    unconvertible: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """One request to make: its id, its conversation and its sampling parameters."""

    id: str
    messages: tuple[Message, ...]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    native: NativeRequest | None = None
    source: str = "<python>"

    @classmethod
    def from_prompt(cls, id: str, prompt: str, **kwargs: Any) -> Job:
        """A single-turn job, the common case for Python callers."""
        system = kwargs.pop("system", None)
        messages = [Message("user", (Part(prompt),))]
        if system is not None:
            messages.insert(0, Message("system", (Part(system),)))
        return cls(id=id, messages=tuple(messages), **kwargs)

    @property
    def text(self) -> str:
        """All the text the job sends, for token estimates."""
        return "\n".join(m.text for m in self.messages)


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How to read datasets whose columns are not one of the four shapes."""

    prompt_column: str | None = None
    prompt_template: str | None = None
    id_column: str | None = None
    template_fields: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.prompt_column is not None and self.prompt_template is not None:
            raise UsageError("--prompt-column and --prompt-template cannot be used together")
        if self.prompt_template is not None:
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f]
            except ValueError as e:
                raise UsageError(f"--prompt-template is not a valid template: {e}") from None
            if not names:
                raise UsageError("--prompt-template names no column, e.g. 'Summarize: {text}'")
            bad = [n for n in names if not n.isidentifier() and not n.replace(" ", "_").isalnum()]
            if bad:
                raise UsageError(f"--prompt-template: use plain column names in braces, not {bad}")
            object.__setattr__(self, "template_fields", tuple(dict.fromkeys(names)))

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this mapping needs in every row."""
        cols = [c for c in (self.prompt_column, self.id_column) if c is not None]
        return (*cols, *self.template_fields)


class _Bad(Exception):
    """A problem with one record; turned into an ``InputProblem`` by the caller."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id


# --- reading files -------------------------------------------------------------------------------


def check_paths(paths: Sequence[Path]) -> None:
    """Fail early, before anything is read, on files that are missing or of a kind we don't read."""
    problems = []
    for p in paths:
        if not p.name.endswith(_SUFFIXES):
            problems.append(
                InputProblem(str(p), "unsupported file type; use .jsonl, .jsonl.gz or .parquet")
            )
        elif not p.is_file():
            problems.append(InputProblem(str(p), "no such file"))
    if problems:
        raise InputError(problems)


_Records: TypeAlias = Iterator[tuple[str, str, "dict[str, Any] | _Bad"]]
"""(where, positional id, record or problem) for each line or row."""


def _iter_jsonl(path: Path) -> _Records:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                where, pos = f"{path}:{n}", f"{path.name}:{n}"
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    yield where, pos, _Bad(f"not valid JSON ({e})")
                    continue
                if not isinstance(rec, dict):
                    yield where, pos, _Bad(f"expected a JSON object, got {type(rec).__name__}")
                    continue
                yield where, pos, rec
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        yield str(path), path.name, _Bad(f"cannot read file: {e}")


def _iter_parquet(path: Path, needed: tuple[str, ...]) -> _Records:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        yield str(path), path.name, _Bad(f"cannot read Parquet file: {e}")
        return
    names = set(pf.schema_arrow.names)
    missing = [c for c in needed if c not in names]
    if missing:
        yield str(path), path.name, _Bad(f"no column(s) {missing}; the file has {sorted(names)}")
        return
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=2048, use_threads=False):
            for rec in batch.to_pylist():
                n += 1
                yield f"{path} row {n}", f"{path.name}:{n}", rec
    except (OSError, pa.ArrowException) as e:
        yield f"{path} row {n + 1}", f"{path.name}:{n + 1}", _Bad(f"cannot read Parquet data: {e}")


def iter_records(paths: Sequence[Path], mapping: ColumnMapping) -> _Records:
    """Every line or row of every file, streaming."""
    for path in paths:
        if path.name.endswith(".parquet"):
            yield from _iter_parquet(path, mapping.columns)
        else:
            yield from _iter_jsonl(path)


# --- one record to one job -----------------------------------------------------------------------


def _str(rec: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    v = rec.get(key)
    if v is None:
        if required:
            raise _Bad(f"missing {key!r}")
        return None
    if not isinstance(v, str):
        raise _Bad(f"{key!r} must be a string, got {type(v).__name__}")
    return v


def _number(rec: Mapping[str, Any], key: str) -> float | None:
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Bad(f"{key!r} must be a number, got {type(v).__name__}")
    return float(v)


def _int(rec: Mapping[str, Any], key: str) -> int | None:
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise _Bad(f"{key!r} must be a positive integer, got {v!r}")
    return v


def _stop(v: Any, key: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list | tuple) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise _Bad(f"{key!r} must be a string or a list of strings")


def _params(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "temperature": _number(rec, "temperature"),
        "max_tokens": _int(rec, "max_tokens"),
        "top_p": _number(rec, "top_p"),
        "stop": _stop(rec.get("stop"), "stop"),
    }


def _record_id(rec: Mapping[str, Any], key: str) -> str | None:
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise _Bad(f"{key!r} must be a string or an integer, got {type(v).__name__}")
    s = str(v)
    if not s:
        raise _Bad(f"{key!r} is empty")
    return s


def _maybe_json(v: Any) -> Any:
    """Parquet columns may hold nested values as JSON strings; accept both."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _openai_content(content: Any, where: str) -> tuple[tuple[Part, ...], list[str]]:
    """OpenAI message content (a string or a list of typed parts) -> our parts, and what is lost."""
    if isinstance(content, str):
        return (Part(content),), []
    if isinstance(content, list):
        parts, lost = [], []
        for p in content:
            if (
                isinstance(p, Mapping)
                and p.get("type") == "text"
                and isinstance(p.get("text"), str)
            ):
                parts.append(Part(p["text"]))
            elif isinstance(p, Mapping):
                lost.append(f"{where} part of type {p.get('type')!r}")
            else:
                raise _Bad(f"{where}: each content part must be an object")
        return tuple(parts), lost
    raise _Bad(f"{where}: 'content' must be a string or a list of parts")


def _openai_messages(raw: Any) -> tuple[tuple[Message, ...], list[str]]:
    raw = _maybe_json(raw)
    if not isinstance(raw, list) or not raw:
        raise _Bad("'messages' must be a non-empty list of {role, content}")
    out, lost = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise _Bad(f"messages[{i}] must be an object")
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in _ROLES:
            raise _Bad(f"messages[{i}].role must be system, user or assistant, got {role!r}")
        if "content" not in m or m["content"] is None:
            raise _Bad(f"messages[{i}] has no 'content'")
        parts, l2 = _openai_content(m["content"], f"messages[{i}]")
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


def _from_openai_batch(rec: Mapping[str, Any]) -> tuple[dict[str, Any], NativeRequest]:
    url = rec.get("url", "/v1/chat/completions")
    if url not in ("/v1/chat/completions", "/chat/completions"):
        raise _Bad(f"OpenAI batch line for {url!r}; only /v1/chat/completions is supported")
    method = rec.get("method", "POST")
    if method != "POST":
        raise _Bad(f"OpenAI batch line with method {method!r}; expected POST")
    body = _maybe_json(rec.get("body"))
    if not isinstance(body, Mapping):
        raise _Bad("OpenAI batch line has no 'body' object")
    messages, lost = _openai_messages(body.get("messages"))
    params = _params(body)
    if body.get("max_completion_tokens") is not None:
        params["max_tokens"] = _int(body, "max_completion_tokens")
    lost += [f"body.{k}" for k in body if k not in _OPENAI_BODY_KEYS]
    fields = {"messages": messages, "model": _str(body, "model"), **params}
    return fields, NativeRequest("openai", dict(body), tuple(lost))


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


def _gemini_parts(raw: Any, where: str) -> tuple[tuple[Part, ...], list[str]]:
    if not isinstance(raw, list):
        raise _Bad(f"{where}.parts must be a list")
    parts, lost = [], []
    for j, p in enumerate(raw):
        if not isinstance(p, Mapping):
            raise _Bad(f"{where}.parts[{j}] must be an object")
        if isinstance(p.get("text"), str):
            parts.append(Part(p["text"]))
            lost += [f"{where}.parts[{j}].{k}" for k in p if k != "text"]
        else:
            lost.append(f"{where}.parts[{j}] ({', '.join(p) or 'empty'})")
    return tuple(parts), lost


def _from_gemini_batch(rec: Mapping[str, Any]) -> tuple[dict[str, Any], NativeRequest]:
    req = _maybe_json(rec.get("request"))
    if not isinstance(req, Mapping):
        raise _Bad("Gemini batch line has no 'request' object")
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Bad("request.contents must be a non-empty list of {role, parts}")
    messages: list[Message] = []
    lost: list[str] = []
    system = _camel(req, "systemInstruction", "system_instruction")
    if system is not None:
        if not isinstance(system, Mapping):
            raise _Bad("request.systemInstruction must be an object with 'parts'")
        parts, l2 = _gemini_parts(system.get("parts"), "request.systemInstruction")
        messages.append(Message("system", parts))
        lost += l2
    for i, c in enumerate(contents):
        if not isinstance(c, Mapping):
            raise _Bad(f"request.contents[{i}] must be an object")
        role = c.get("role", "user")
        if role not in ("user", "model"):
            raise _Bad(f"request.contents[{i}].role must be 'user' or 'model', got {role!r}")
        parts, l2 = _gemini_parts(c.get("parts"), f"request.contents[{i}]")
        messages.append(Message("user" if role == "user" else "assistant", parts))
        lost += l2
    config = _camel(req, "generationConfig", "generation_config") or {}
    if not isinstance(config, Mapping):
        raise _Bad("request.generationConfig must be an object")
    flat = {
        "temperature": config.get("temperature"),
        "max_tokens": _camel(config, "maxOutputTokens", "max_output_tokens"),
        "top_p": _camel(config, "topP", "top_p"),
    }
    params = _params(flat)
    params["stop"] = _stop(_camel(config, "stopSequences", "stop_sequences"), "stopSequences")
    lost += [f"request.generationConfig.{k}" for k in config if k not in _GEMINI_CONFIG_KEYS]
    known = {
        "contents",
        "systemInstruction",
        "system_instruction",
        "generationConfig",
        "generation_config",
        "model",
    }
    lost += [f"request.{k}" for k in req if k not in known]
    model = _str(req, "model")
    if model is not None:
        model = model.removeprefix("models/")
    fields = {"messages": tuple(messages), "model": model, **params}
    return fields, NativeRequest("gemini", dict(req), tuple(lost))


def _from_columns(rec: Mapping[str, Any], mapping: ColumnMapping) -> dict[str, Any]:
    if mapping.prompt_column is not None:
        if mapping.prompt_column not in rec:
            raise _Bad(f"no column {mapping.prompt_column!r}")
        prompt = rec[mapping.prompt_column]
        if not isinstance(prompt, str):
            raise _Bad(f"column {mapping.prompt_column!r} must be a string, got {prompt!r}")
    else:
        assert mapping.prompt_template is not None
        for col in mapping.template_fields:
            if col not in rec:
                raise _Bad(f"the template names column {col!r}, which this row does not have")
            if rec[col] is None:
                raise _Bad(f"column {col!r} is null")
        prompt = mapping.prompt_template.format_map(rec)
    return {"messages": (Message("user", (Part(prompt),)),)}


def _detect(rec: Mapping[str, Any], mapping: ColumnMapping) -> tuple[dict[str, Any], str | None]:
    """Return the job's fields and its own id (None: use the row position)."""
    if mapping.prompt_column is not None or mapping.prompt_template is not None:
        return _from_columns(rec, mapping), _record_id(rec, "id")
    if "custom_id" in rec or "body" in rec:
        fields, native = _from_openai_batch(rec)
        return {**fields, "native": native}, _record_id(rec, "custom_id")
    if "request" in rec:
        fields, native = _from_gemini_batch(rec)
        if fields["model"] is None:
            fields["model"] = _str(rec, "model")
        return {**fields, "native": native}, _record_id(rec, "key")
    if "messages" in rec:
        messages, lost = _openai_messages(rec["messages"])
        if lost:
            raise _Bad(f"'messages' holds what batcher cannot send yet: {', '.join(lost)}")
        return {"messages": messages, "model": _str(rec, "model"), **_params(rec)}, _record_id(
            rec, "id"
        )
    if "prompt" in rec:
        prompt = _str(rec, "prompt", required=True)
        assert prompt is not None
        turns = [Message("user", (Part(prompt),))]
        system = _str(rec, "system")
        if system is not None:
            turns.insert(0, Message("system", (Part(system),)))
        return {"messages": tuple(turns), "model": _str(rec, "model"), **_params(rec)}, (
            _record_id(rec, "id")
        )
    keys = ", ".join(sorted(rec)[:8]) or "none"
    raise _Bad(
        "unknown shape: expected 'prompt', 'messages', an OpenAI batch line ('custom_id', 'body') "
        f"or a Gemini batch line ('key', 'request'); this line has keys: {keys}"
    )


def parse_record(
    rec: Mapping[str, Any], *, where: str, position_id: str, mapping: ColumnMapping
) -> Job:
    """One line or row -> one Job; raises ``_Bad`` naming the problem."""
    own_id: str | None = None
    try:
        if mapping.id_column is not None:
            own_id = _record_id(rec, mapping.id_column)
            if own_id is None:
                raise _Bad(f"id column {mapping.id_column!r} is missing or null")
        fields, shape_id = _detect(rec, mapping)
    except _Bad as e:
        if e.job_id is None:
            e.job_id = own_id or _safe_id(rec)
        raise
    job_id = own_id or shape_id or position_id
    return Job(id=job_id, source=where, **fields)


def _safe_id(rec: Mapping[str, Any]) -> str | None:
    for key in ("id", "custom_id", "key"):
        v = rec.get(key)
        if isinstance(v, str | int) and not isinstance(v, bool):
            return str(v)
    return None


# --- the source: files or Python objects, read twice (check, then send) --------------------------


@dataclass(frozen=True, slots=True)
class Scan:
    """What the first pass found: how many jobs there are."""

    total: int


class JobSource:
    """Jobs from files (streamed, read once to check and once to send) or from Python objects.

    A Python iterable is read once into a list, since a generator cannot be read twice.
    """

    def __init__(
        self,
        jobs: str | Path | Iterable[str | Path] | Iterable[Job | Mapping[str, Any]],
        mapping: ColumnMapping | None = None,
    ) -> None:
        self.mapping = mapping or ColumnMapping()
        self.paths: list[Path] = []
        self.items: list[Job | Mapping[str, Any]] = []
        if isinstance(jobs, str | Path):
            self.paths = [Path(jobs)]
        else:
            items = list(jobs)
            if items and all(isinstance(i, str | Path) for i in items):
                self.paths = [Path(i) for i in items]  # type: ignore[arg-type]
            else:
                for i in items:
                    if not isinstance(i, Job | Mapping):
                        raise UsageError(
                            f"jobs must be Job objects or mappings, got {type(i).__name__}"
                        )
                self.items = items  # type: ignore[assignment]

    def _records(
        self,
    ) -> Iterator[tuple[str, str, Job | dict[str, Any] | Mapping[str, Any] | _Bad]]:
        if self.paths:
            yield from iter_records(self.paths, self.mapping)
        else:
            for n, item in enumerate(self.items, start=1):
                yield f"jobs[{n - 1}]", f"job-{n}", item

    def _parse(self, where: str, pos: str, rec: Any) -> Job:
        if isinstance(rec, _Bad):
            raise rec
        if isinstance(rec, Job):
            return rec
        return parse_record(rec, where=where, position_id=pos, mapping=self.mapping)

    def scan(
        self,
        *,
        provider: ProviderName,
        default_model: str | None,
        visit: Callable[[Job], None] | None = None,
    ) -> Scan:
        """Check every job before anything is sent; raise ``InputError`` naming every problem.

        ``visit`` is called with every good job, so a caller can look at each in the same pass.
        """
        if self.paths:
            check_paths(self.paths)
        problems: list[InputProblem] = []
        more = 0
        seen = array("Q")  # id hashes: 8 bytes a job, however many jobs
        total = 0

        def problem(p: InputProblem) -> None:
            nonlocal more
            if len(problems) < MAX_PROBLEMS:
                problems.append(p)
            else:
                more += 1

        for where, pos, rec in self._records():
            try:
                job = self._parse(where, pos, rec)
            except _Bad as e:
                problem(InputProblem(where, e.message, e.job_id))
                continue
            total += 1
            seen.append(id_hash(job.id))
            issue = job_problem(job, provider=provider, default_model=default_model)
            if issue:
                problem(InputProblem(where, issue, job.id))
            elif visit is not None and not problems:
                visit(job)
        repeated = duplicates(seen)
        del seen
        if repeated:
            for p in self._duplicates(repeated):
                problem(p)
        if problems:
            raise InputError(problems, more=more)
        return Scan(total=total)

    def _duplicates(self, repeated: set[int]) -> Iterator[InputProblem]:
        """A second pass, only when some id hashes repeat: name each duplicate's line."""
        first: dict[str, str] = {}
        for where, pos, rec in self._records():
            try:
                job = self._parse(where, pos, rec)
            except _Bad:
                continue
            if id_hash(job.id) not in repeated:
                continue
            if job.id in first:
                yield InputProblem(where, f"duplicate id, first seen at {first[job.id]}", job.id)
            else:
                first[job.id] = where

    def __iter__(self) -> Iterator[Job]:
        for where, pos, rec in self._records():
            yield self._parse(where, pos, rec)


def job_problem(job: Job, *, provider: ProviderName, default_model: str | None) -> str | None:
    """Why this job cannot be sent to this provider, or None."""
    if job.model is None and default_model is None:
        return "no model: give the job a 'model' or pass --model"
    if not job.messages or not any(m.role != "system" for m in job.messages):
        return "no user message to send"
    native = job.native
    if native is not None and native.provider != provider and native.unconvertible:
        return (
            f"this {native.provider} batch line cannot be sent to {provider} without losing "
            f"{', '.join(native.unconvertible)}; use --provider {native.provider}"
        )
    return None
