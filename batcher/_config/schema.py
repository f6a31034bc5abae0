"""Structured output: a schema in, each wire's response format, every answer validated, and the
Arrow type of the ``parsed`` column.

A schema comes as a JSON Schema (a file, or a dict) or as a pydantic model class (``module:Model``
on the command line). Its JSON Schema is the one canonical form: it goes on the wire, into
``run.json``, and is what the ``parsed`` column's Arrow type and the mock's answers derive from.
Answers are validated by pydantic: by the model itself when there is one (its types, its
validators), else by a validator built from the JSON Schema with pydantic-core.

This module loads a schema and holds it; the walkers over its JSON Schema live beside it:
``schema_arrow`` (the Arrow shape), ``schema_strict`` (OpenAI's strict form), ``schema_check``
(the validator), over ``schema_nodes`` (``$ref``s, unions, null).

pydantic is imported only when a run has a schema, so ``batcher --help`` and runs without one do
not pay for it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core.errors import InvalidOutput, SchemaError
from .schema_arrow import shape_of
from .schema_check import drop_nulls, error_text, validator
from .schema_nodes import Refs, alternatives
from .schema_strict import strict_schema

if TYPE_CHECKING:
    from .._core.completion import Completion

__all__ = ["OutputSchema", "load_schema"]

_CUT = frozenset({"length", "MAX_TOKENS"})
"""Finish reasons of an answer cut off by ``max_tokens`` (OpenAI's, Gemini's)."""


class OutputSchema:
    """A run's output schema: what goes on the wire, how answers are checked and stored."""

    def __init__(
        self, json_schema: Mapping[str, Any], *, source: str, name: str, model: Any = None
    ) -> None:
        self.json_schema: dict[str, Any] = dict(json_schema)
        self.source = source
        """Where it came from, for messages: a file, ``module:Model``, or ``<dict>``."""
        self.name = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "output"
        self.model = model
        """The pydantic model class it came from, if any."""
        self.refs = Refs(self.json_schema, source)
        self.shape = shape_of(self.json_schema, self.refs, (), "")
        self.text = json.dumps(self.json_schema, ensure_ascii=False, separators=(",", ":"))
        """The schema as compact JSON: what its tokens are estimated from."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputSchema) and self.json_schema == other.json_schema

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as what it was made from (a cluster's workers get it so): the JSON Schema, its
        source and name, and the pydantic model by reference (importable where it is unpickled,
        so its own validation fills defaults there too); the validator is built again there."""
        return (_rebuild, (self.json_schema, self.source, self.name, self.model))

    def arrow_type(self) -> Any:
        """The Arrow type of the ``parsed`` column."""
        return self.shape.arrow()

    @cached_property
    def strict_schema(self) -> dict[str, Any]:
        """The schema as OpenAI's strict mode takes it; ``SchemaError`` if it cannot."""
        root = self.json_schema
        if alternatives(root) is not None or root.get("type") not in ("object", None):
            raise SchemaError(self.source, "", "strict mode needs an object at the root")
        return strict_schema(root, self.refs, "")

    def check_wire(self, provider: str) -> None:
        """Raise ``SchemaError`` now, before anything is sent, if ``provider`` cannot take it."""
        if provider == "openai":
            _ = self.strict_schema
        _ = self._validate

    def request(
        self, provider: str, body: dict[str, Any], *, responses: bool = False
    ) -> dict[str, Any]:
        """``body`` asking for answers in this schema; a body that already asks for a format of
        its own (a native batch-API line) is left as it is. ``responses``: the body is OpenAI's
        Responses API's, which takes the same strict schema under ``text.format``."""
        if provider == "openai" and responses:
            # https://platform.openai.com/docs/api-reference/responses/create#responses-create-text
            text = dict(body.get("text") or {})
            if "format" in text:
                return body
            text["format"] = {
                "type": "json_schema",
                "name": self.name,
                "schema": self.strict_schema,
                "strict": True,
            }
            return {**body, "text": text}
        if provider == "openai":
            # https://platform.openai.com/docs/api-reference/chat/create#chat-create-response_format
            if "response_format" in body:
                return body
            fmt = {"name": self.name, "schema": self.strict_schema, "strict": True}
            return {**body, "response_format": {"type": "json_schema", "json_schema": fmt}}
        # https://ai.google.dev/gemini-api/docs/structured-output and
        # https://ai.google.dev/api/generate-content#generationconfig (responseJsonSchema)
        key = "generation_config" if "generation_config" in body else "generationConfig"
        config = dict(body.get(key) or {})
        if any(
            k in config
            for k in (
                "responseJsonSchema",
                "response_json_schema",
                "responseSchema",
                "response_schema",
            )
        ):
            return body
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = self.json_schema
        return {**body, key: config}

    @cached_property
    def _validate(self) -> Callable[[Any], Any]:
        """A function from JSON data to the validated JSON data, raising ``ValueError``-like
        pydantic errors; built once per run."""
        if self.model is not None:
            model = self.model

            def by_model(value: Any) -> Any:
                return model.model_validate(value).model_dump(mode="json", by_alias=True)

            return by_model
        return validator(self.json_schema, self.refs)

    def check(self, answer: Completion) -> Any:
        """The answer's text parsed, validated and shaped for the ``parsed`` column; raises
        ``InvalidOutput`` (field path and reason) if it is cut off, not JSON, or not valid."""
        from pydantic import ValidationError

        if answer.finish_reason in _CUT:
            why = f"the answer was cut off by max_tokens (finish reason {answer.finish_reason})"
            raise InvalidOutput(why, answer=answer)
        if answer.text is None:
            raise InvalidOutput("the answer has no text", answer=answer)
        try:
            value = json.loads(answer.text)
        except ValueError as e:
            raise InvalidOutput(f"the answer is not JSON: {e}", answer=answer) from None
        try:
            valid = self._validate(drop_nulls(value, self.json_schema, self.refs))
            return self.shape.to_arrow(valid)
        except ValidationError as e:
            raise InvalidOutput(error_text(e), answer=answer) from None
        except ValueError as e:
            raise InvalidOutput(str(e), answer=answer) from None

    def instance(self, stored: Any) -> Any:
        """A stored ``parsed`` value as the model's instance (or as JSON data, without one)."""
        value = self.shape.from_arrow(stored)
        return self.model.model_validate(value) if self.model is not None else value

    def to_json(self) -> dict[str, Any]:
        """What ``run.json`` records of it."""
        return {"source": self.source, "name": self.name, "schema": self.json_schema}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutputSchema:
        return cls(data["schema"], source=str(data["source"]), name=str(data["name"]))


def _rebuild(json_schema: dict[str, Any], source: str, name: str, model: Any) -> OutputSchema:
    """An unpickled ``OutputSchema`` (see ``OutputSchema.__reduce__``)."""
    return OutputSchema(json_schema, source=source, name=name, model=model)


_IMPORT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def load_schema(spec: Any) -> OutputSchema:
    """The schema ``spec`` names: a JSON Schema file's path, ``package.module:Model`` (imported
    with the current directory importable, as uvicorn does), a pydantic model class, or a JSON
    Schema dict. ``SchemaError`` (a usage error, exit 2) says what is wrong and where."""
    if isinstance(spec, OutputSchema):
        return spec
    if isinstance(spec, Mapping):
        return _checked(OutputSchema(spec, source="<dict>", name=str(spec.get("title", "output"))))
    if isinstance(spec, type):
        return _from_model(spec, spec.__name__)
    if isinstance(spec, str | os.PathLike):
        text = os.fspath(spec)
        if not os.path.exists(text) and _IMPORT.fullmatch(text):
            return _from_model(_import(text), text)
        return _from_file(Path(text))
    raise SchemaError(repr(spec), "", "a schema is a JSON Schema file or dict, or a pydantic model")


def _from_file(path: Path) -> OutputSchema:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SchemaError(str(path), "", f"cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        hint = (
            "; a pydantic model is named as package.module:Model, not by its file"
            if path.suffix == ".py"
            else ""
        )
        raise SchemaError(str(path), "", f"is not JSON ({e}){hint}") from None
    if not isinstance(data, dict):
        raise SchemaError(str(path), "", "a JSON Schema is a JSON object")
    return _checked(OutputSchema(data, source=str(path), name=str(data.get("title", path.stem))))


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` and uvicorn have it
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise SchemaError(spec, "", f"cannot import {module_name!r} ({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SchemaError(spec, "", f"{module_name} has no attribute {attr!r}") from None
    return obj


def _from_model(model: Any, source: str) -> OutputSchema:
    describe = getattr(model, "model_json_schema", None)
    if not (isinstance(model, type) and callable(describe)):
        raise SchemaError(source, "", "is not a pydantic (v2) model class")
    try:
        schema = describe()
    except Exception as e:  # pydantic cannot describe every type it validates
        raise SchemaError(source, "", f"pydantic cannot make a JSON Schema of it ({e})") from None
    return _checked(OutputSchema(schema, source=source, name=model.__name__, model=model))


def _checked(schema: OutputSchema) -> OutputSchema:
    """``schema`` once its validator builds (unknown types and bad $refs are found now)."""
    _ = schema._validate
    return schema
