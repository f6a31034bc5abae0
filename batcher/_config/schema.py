"""Structured output: a schema in, each wire's response format, every answer validated, and the
Arrow type of the ``parsed`` column.

A schema comes as a JSON Schema (a file, or a dict) or as a pydantic model class (``module:Model``
on the command line). Its JSON Schema is the one canonical form: it goes on the wire, into
``run.json``, and is what the ``parsed`` column's Arrow type and the mock's answers derive from.
Answers are validated by pydantic: by the model itself when there is one (its types, its
validators), else by a validator built from the JSON Schema with pydantic-core.

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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core.errors import InvalidOutput, SchemaError

if TYPE_CHECKING:
    from .._core.completion import Completion

__all__ = ["OutputSchema", "Shape", "load_schema"]

_INT64 = (-(2**63), 2**63 - 1)

# Keywords OpenAI's strict mode takes (besides the structural ones handled one by one below):
# https://platform.openai.com/docs/guides/structured-outputs#supported-schemas
_STRICT_KEEP = frozenset(
    {
        "type",
        "description",
        "title",
        "enum",
        "const",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
# Keywords strict mode has no use for that only constrain or annotate: left off the wire, and
# still checked on our side (the answer is validated against the schema as given).
_STRICT_DROP = frozenset(
    {
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "minLength",
        "maxLength",
        "uniqueItems",
        "readOnly",
        "writeOnly",
        "deprecated",
        "discriminator",
    }
)

_CUT = frozenset({"length", "MAX_TOKENS"})
"""Finish reasons of an answer cut off by ``max_tokens`` (OpenAI's, Gemini's)."""


def _where(path: str) -> str:
    return path or "(root)"


class _Refs:
    """Local ``$ref`` resolution (``#/$defs/X``, ``#/definitions/X``) against one root schema."""

    def __init__(self, root: Mapping[str, Any], source: str) -> None:
        self.root = root
        self.source = source

    def resolve(self, ref: Any, path: str) -> tuple[str, Mapping[str, Any]]:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaError(
                self.source, path, f"only local $refs (#/$defs/...) work, not {ref!r}"
            )
        node: Any = self.root
        for key in ref[2:].split("/"):
            key = key.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                raise SchemaError(self.source, path, f"$ref {ref!r} points at nothing")
            node = node[key]
        if not isinstance(node, Mapping):
            raise SchemaError(self.source, path, f"$ref {ref!r} is not a schema")
        return ref, node


def _branches(node: Mapping[str, Any]) -> list[Any] | None:
    """The alternatives of a union (``anyOf``, or ``oneOf`` read as ``anyOf``), if it is one."""
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            return list(node[key])
    return None


def _allows_null(node: Mapping[str, Any], refs: _Refs, path: str = "") -> bool:
    if "$ref" in node:
        return _allows_null(refs.resolve(node["$ref"], path)[1], refs, path)
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind) or node.get("nullable"):
        return True
    if "enum" in node and isinstance(node["enum"], list):
        return None in node["enum"]
    branches = _branches(node)
    return branches is not None and any(
        isinstance(b, Mapping) and _allows_null(b, refs, path) for b in branches
    )


# --- the Arrow side: a shape per schema node ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """How one schema node is stored: ``struct`` (``fields``), ``list`` (``item``), a scalar
    (``string``, ``int64``, ``double``, ``bool``), or ``json`` (a JSON string: anything with no
    Arrow type of its own: unions, free-form objects, recursion)."""

    kind: str
    fields: tuple[tuple[str, Shape, bool], ...] = ()
    """(name, shape, null allowed by the schema) of each property of a struct."""
    item: Shape | None = None

    def arrow(self) -> Any:
        import pyarrow as pa

        if self.kind == "struct":
            return pa.struct([pa.field(name, s.arrow()) for name, s, _ in self.fields])
        if self.kind == "list":
            assert self.item is not None
            return pa.list_(self.item.arrow())
        return {
            "string": pa.string(),
            "int64": pa.int64(),
            "double": pa.float64(),
            "bool": pa.bool_(),
            "json": pa.string(),
        }[self.kind]

    def to_arrow(self, value: Any, path: str = "") -> Any:
        """``value`` (valid JSON data) as this column holds it; ``ValueError`` if it cannot be."""
        if value is None:
            return None
        kind = self.kind
        if kind == "json":
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if kind == "struct" and isinstance(value, dict):
            return {
                n: s.to_arrow(value.get(n), f"{path}.{n}".lstrip(".")) for n, s, _ in self.fields
            }
        if kind == "list" and isinstance(value, list):
            assert self.item is not None
            return [self.item.to_arrow(v, f"{path}.{i}".lstrip(".")) for i, v in enumerate(value)]
        if kind == "string" and isinstance(value, str):
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int64" and isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValueError(f"{_where(path)}: {value} does not fit a 64-bit integer column")
            return value
        if kind == "double" and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{_where(path)}: {type(value).__name__} does not fit a {kind} column")

    def from_arrow(self, value: Any) -> Any:
        """The JSON data a column value holds; a struct leaves out null fields the schema does
        not allow null for (they were absent)."""
        if value is None:
            return None
        if self.kind == "json":
            return json.loads(value)
        if self.kind == "struct":
            out = {}
            for name, shape, nullable in self.fields:
                v = value.get(name)
                if v is not None or nullable:
                    out[name] = shape.from_arrow(v)
            return out
        if self.kind == "list":
            assert self.item is not None
            return [self.item.from_arrow(v) for v in value]
        return value


_JSON = Shape("json")
_SCALARS = {"string": "string", "integer": "int64", "number": "double", "boolean": "bool"}


def _enum_shape(values: list[Any]) -> Shape:
    values = [v for v in values if v is not None]
    if values and all(isinstance(v, str) for v in values):
        return Shape("string")
    if values and all(isinstance(v, bool) for v in values):
        return Shape("bool")
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return Shape("int64")
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return Shape("double")
    return _JSON


def _shape(node: Any, refs: _Refs, seen: tuple[str, ...], path: str) -> Shape:
    if not isinstance(node, Mapping):
        return _JSON
    if "$ref" in node:
        ref, target = refs.resolve(node["$ref"], path)
        if ref in seen:
            return _JSON  # a recursive schema has no fixed Arrow type
        return _shape(target, refs, (*seen, ref), path)
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        return _shape(node["allOf"][0], refs, seen, path)
    if "const" in node:
        return _enum_shape([node["const"]])
    if isinstance(node.get("enum"), list):
        return _enum_shape(node["enum"])
    branches = _branches(node)
    if branches is not None:
        real = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        return _shape(real[0], refs, seen, path) if len(real) == 1 else _JSON
    kind = node.get("type")
    if isinstance(kind, list):
        real = [k for k in kind if k != "null"]
        if len(real) != 1:
            return _JSON
        kind = real[0]
    kind = kind.lower() if isinstance(kind, str) else kind  # Gemini's OpenAPI style: "OBJECT"
    if kind in _SCALARS:
        return Shape(_SCALARS[kind])
    if kind == "array" and isinstance(node.get("items"), Mapping):
        return Shape("list", item=_shape(node["items"], refs, seen, f"{path}.items"))
    props = node.get("properties")
    if (kind == "object" or kind is None) and isinstance(props, Mapping) and props:
        return Shape(
            "struct",
            fields=tuple(
                (
                    str(name),
                    _shape(sub, refs, seen, f"{path}.{name}".lstrip(".")),
                    isinstance(sub, Mapping) and _allows_null(sub, refs),
                )
                for name, sub in props.items()
            ),
        )
    return _JSON


# --- OpenAI strict mode ---------------------------------------------------------------------


def _nullable(node: dict[str, Any], refs: _Refs) -> dict[str, Any]:
    """``node`` allowing null too: how strict mode spells an optional property."""
    if _allows_null(node, refs):
        return node
    kind = node.get("type")
    if kind is not None and not any(k in node for k in ("enum", "const", "anyOf", "$ref")):
        return {**node, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}
    if isinstance(node.get("anyOf"), list):
        return {**node, "anyOf": [*node["anyOf"], {"type": "null"}]}
    return {"anyOf": [node, {"type": "null"}]}


def _strict(node: Any, refs: _Refs, path: str) -> dict[str, Any]:
    """``node`` as OpenAI's strict mode requires: every object closed (``additionalProperties:
    false``) with every property required, optional ones made nullable; ``SchemaError`` naming
    the path for what strict mode cannot express.
    https://platform.openai.com/docs/guides/structured-outputs#supported-schemas"""
    source = refs.source
    if not isinstance(node, Mapping):
        raise SchemaError(source, path, "a schema must be a JSON object")
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        return _strict({**merged, **node["allOf"][0]}, refs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        here = f"{path}.{key}".lstrip(".")
        if key in _STRICT_DROP:
            continue
        if key in _STRICT_KEEP:
            out[key] = value
        elif key == "$ref":
            refs.resolve(value, here)
            out[key] = value
        elif key in ("$defs", "definitions") and isinstance(value, Mapping):
            out[key] = {n: _strict(s, refs, f"{here}.{n}") for n, s in value.items()}
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            out["anyOf"] = [_strict(s, refs, f"{here}.{i}") for i, s in enumerate(value)]
        elif key == "items":
            out[key] = _strict(value, refs, here)
        elif key in ("properties", "required", "additionalProperties"):
            pass  # below, with the object as a whole
        else:
            raise SchemaError(source, here, f"OpenAI's strict mode does not support {key!r}")
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "object" in kinds or "properties" in node:
        extra = node.get("additionalProperties", False)
        if extra is not False:
            raise SchemaError(
                source,
                f"{path}.additionalProperties".lstrip("."),
                "strict mode cannot express an object with free-form keys",
            )
        props = node.get("properties")
        if not isinstance(props, Mapping) or not props:
            raise SchemaError(
                source, path, "strict mode cannot express an object without properties"
            )
        required = set(node.get("required") or ())
        out["properties"] = {}
        for name, sub in props.items():
            strict = _strict(sub, refs, f"{path}.properties.{name}".lstrip("."))
            out["properties"][name] = strict if name in required else _nullable(strict, refs)
        out["required"] = list(props)
        out["additionalProperties"] = False
    if "array" in kinds and "items" not in node:
        raise SchemaError(source, path, "strict mode cannot express an array without items")
    return out


# --- validation -----------------------------------------------------------------------------


def _core(node: Any, refs: _Refs, defs: dict[str, Any], path: str) -> Any:
    """A pydantic-core schema that validates JSON data against JSON Schema ``node``: strict types
    (no "3" for 3), objects closed only where the schema says so. ``defs`` gathers ``$ref``s."""
    from pydantic_core import core_schema as cs

    if not isinstance(node, Mapping):
        raise SchemaError(refs.source, path, "a schema must be a JSON object")
    if "$ref" in node:
        ref, target = refs.resolve(node["$ref"], path)
        if ref not in defs:
            defs[ref] = None  # placeholder: a recursive $ref meets it and stops
            defs[ref] = {**_core(target, refs, defs, path), "ref": ref}
        return cs.definition_reference_schema(ref)
    if isinstance(node.get("allOf"), list):
        if len(node["allOf"]) != 1:
            raise SchemaError(refs.source, path, "allOf of more than one schema is not supported")
        merged = {k: v for k, v in node.items() if k != "allOf"}
        return _core({**merged, **node["allOf"][0]}, refs, defs, path)
    nullable = bool(node.get("nullable"))
    if "const" in node:
        return cs.literal_schema([node["const"]])
    if isinstance(node.get("enum"), list):
        return cs.literal_schema(list(node["enum"]))
    branches = _branches(node)
    kind = node.get("type")
    if branches is None and isinstance(kind, list):
        one = {k: v for k, v in node.items() if k != "type"}
        branches = [{**one, "type": k} for k in kind]
    if branches is not None:
        real = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        if not real:
            return cs.none_schema()
        choices = [_core(b, refs, defs, path) for b in real]
        schema = choices[0] if len(choices) == 1 else cs.union_schema(choices, mode="smart")
        return cs.nullable_schema(schema) if len(real) < len(branches) else schema
    kind = kind.lower() if isinstance(kind, str) else kind
    schema = _core_typed(node, kind, refs, defs, path)
    return cs.nullable_schema(schema) if nullable else schema


def _core_typed(
    node: Mapping[str, Any], kind: Any, refs: _Refs, defs: dict[str, Any], path: str
) -> Any:
    from pydantic_core import core_schema as cs

    bounds = {
        "ge": node.get("minimum"),
        "le": node.get("maximum"),
        "gt": node.get("exclusiveMinimum"),
        "lt": node.get("exclusiveMaximum"),
        "multiple_of": node.get("multipleOf"),
    }
    bounds = {
        k: v for k, v in bounds.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if kind == "string":
        return cs.str_schema(
            strict=True,
            min_length=node.get("minLength"),
            max_length=node.get("maxLength"),
            pattern=node.get("pattern"),
        )
    if kind == "integer":
        return cs.int_schema(strict=True, **bounds)
    if kind == "number":
        return cs.float_schema(strict=True, allow_inf_nan=False, **bounds)
    if kind == "boolean":
        return cs.bool_schema(strict=True)
    if kind == "null":
        return cs.none_schema()
    if kind == "array":
        items = node.get("items")
        item = _core(items, refs, defs, f"{path}.items") if items is not None else cs.any_schema()
        return cs.list_schema(
            item, min_length=node.get("minItems"), max_length=node.get("maxItems"), strict=True
        )
    props = node.get("properties")
    if kind == "object" or props is not None:
        extra = node.get("additionalProperties", True)
        if not isinstance(props, Mapping) or not props:
            values = (
                _core(extra, refs, defs, path) if isinstance(extra, Mapping) else cs.any_schema()
            )
            return cs.dict_schema(cs.str_schema(), values, strict=True)
        required = set(node.get("required") or ())
        fields = {
            str(name): cs.typed_dict_field(
                _core(sub, refs, defs, f"{path}.{name}".lstrip(".")), required=name in required
            )
            for name, sub in props.items()
        }
        return cs.typed_dict_schema(
            fields, extra_behavior="forbid" if extra is False else "ignore", strict=True
        )
    if kind is None:
        return cs.any_schema()
    raise SchemaError(refs.source, path, f"unknown type {kind!r}")


def _error_text(error: Any) -> str:
    """A pydantic ``ValidationError`` as ``field.path: reason`` lines (the first three)."""
    parts = []
    for e in error.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{_where(loc)}: {e['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# --- the schema ----------------------------------------------------------------------------


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
        self.refs = _Refs(self.json_schema, source)
        self.shape = _shape(self.json_schema, self.refs, (), "")
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
        if _branches(root) is not None or root.get("type") not in ("object", None):
            raise SchemaError(self.source, "", "strict mode needs an object at the root")
        return _strict(root, self.refs, "")

    def check_wire(self, provider: str) -> None:
        """Raise ``SchemaError`` now, before anything is sent, if ``provider`` cannot take it."""
        if provider == "openai":
            _ = self.strict_schema
        _ = self._validate

    def request(self, provider: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` asking for answers in this schema; a body that already asks for a format of
        its own (a native batch-API line) is left as it is."""
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
        from pydantic_core import SchemaValidator
        from pydantic_core import core_schema as cs

        defs: dict[str, Any] = {}
        root = _core(self.json_schema, self.refs, defs, "")
        if defs:
            root = cs.definitions_schema(root, list(defs.values()))
        return SchemaValidator(root).validate_python

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
            valid = self._validate(self._drop_nulls(value, self.json_schema, ()))
            return self.shape.to_arrow(valid)
        except ValidationError as e:
            raise InvalidOutput(_error_text(e), answer=answer) from None
        except ValueError as e:
            raise InvalidOutput(str(e), answer=answer) from None

    def _drop_nulls(self, value: Any, node: Any, seen: tuple[str, ...]) -> Any:
        """``value`` without the nulls strict mode puts where the schema has an optional
        property that does not allow null (strict mode makes every property required)."""
        if not isinstance(node, Mapping):
            return value
        if "$ref" in node:
            ref, target = self.refs.resolve(node["$ref"], "")
            return value if ref in seen else self._drop_nulls(value, target, (*seen, ref))
        if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            return self._drop_nulls(value, node["allOf"][0], seen)
        branches = _branches(node)
        if branches is not None:
            for branch in branches:  # the first branch that can hold the value
                if self._can_hold(value, branch, seen):
                    return self._drop_nulls(value, branch, seen)
            return value
        props = node.get("properties")
        if isinstance(value, dict) and isinstance(props, Mapping):
            required = set(node.get("required") or ())
            out = {}
            for k, v in value.items():
                sub = props.get(k)
                if not isinstance(sub, Mapping):
                    out[k] = v
                    continue
                if v is None and k not in required and not _allows_null(sub, self.refs):
                    continue
                out[k] = self._drop_nulls(v, sub, seen)
            return out
        items = node.get("items")
        if isinstance(value, list) and isinstance(items, Mapping):
            return [self._drop_nulls(v, items, seen) for v in value]
        return value

    def _can_hold(self, value: Any, node: Any, seen: tuple[str, ...]) -> bool:
        """Whether ``node`` (through refs and unions) is an object schema with every key of
        ``value``, or an array schema for a list ``value``."""
        if not isinstance(node, Mapping) or not isinstance(value, dict | list):
            return False
        if "$ref" in node:
            ref, target = self.refs.resolve(node["$ref"], "")
            return ref not in seen and self._can_hold(value, target, (*seen, ref))
        branches = _branches(node)
        if branches is not None:
            return any(self._can_hold(value, b, seen) for b in branches)
        if isinstance(value, list):
            return isinstance(node.get("items"), Mapping)
        props = node.get("properties")
        return isinstance(props, Mapping) and set(value) <= set(props)

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
