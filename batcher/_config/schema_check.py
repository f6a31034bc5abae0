"""Checking answers against an output schema given as JSON Schema: a pydantic-core validator
built from it (strict types, objects closed only where the schema says so), the nulls strict mode
adds taken out first, and pydantic's errors as ``field.path: reason``.

pydantic is imported only when a validator is built, so runs without a schema do not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._core.errors import SchemaError
from .schema_nodes import Refs, allows_null, alternatives, where

__all__ = ["drop_nulls", "error_text", "validator"]


def validator(root: Mapping[str, Any], refs: Refs) -> Callable[[Any], Any]:
    """A function from JSON data to the validated JSON data, built with pydantic-core from JSON
    Schema ``root``; it raises pydantic's ``ValidationError``."""
    from pydantic_core import SchemaValidator
    from pydantic_core import core_schema as cs

    defs: dict[str, Any] = {}
    core = _core(root, refs, defs, "")
    if defs:
        core = cs.definitions_schema(core, list(defs.values()))
    return SchemaValidator(core).validate_python


def _core(node: Any, refs: Refs, defs: dict[str, Any], path: str) -> Any:
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
    branches = alternatives(node)
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
    node: Mapping[str, Any], kind: Any, refs: Refs, defs: dict[str, Any], path: str
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


def drop_nulls(value: Any, node: Any, refs: Refs, seen: tuple[str, ...] = ()) -> Any:
    """``value`` without the nulls strict mode puts where the schema has an optional
    property that does not allow null (strict mode makes every property required)."""
    if not isinstance(node, Mapping):
        return value
    if "$ref" in node:
        ref, target = refs.resolve(node["$ref"], "")
        return value if ref in seen else drop_nulls(value, target, refs, (*seen, ref))
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        return drop_nulls(value, node["allOf"][0], refs, seen)
    branches = alternatives(node)
    if branches is not None:
        for branch in branches:  # the first branch that can hold the value
            if _can_hold(value, branch, refs, seen):
                return drop_nulls(value, branch, refs, seen)
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
            if v is None and k not in required and not allows_null(sub, refs):
                continue
            out[k] = drop_nulls(v, sub, refs, seen)
        return out
    items = node.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        return [drop_nulls(v, items, refs, seen) for v in value]
    return value


def _can_hold(value: Any, node: Any, refs: Refs, seen: tuple[str, ...]) -> bool:
    """Whether ``node`` (through refs and unions) is an object schema with every key of
    ``value``, or an array schema for a list ``value``."""
    if not isinstance(node, Mapping) or not isinstance(value, dict | list):
        return False
    if "$ref" in node:
        ref, target = refs.resolve(node["$ref"], "")
        return ref not in seen and _can_hold(value, target, refs, (*seen, ref))
    branches = alternatives(node)
    if branches is not None:
        return any(_can_hold(value, b, refs, seen) for b in branches)
    if isinstance(value, list):
        return isinstance(node.get("items"), Mapping)
    props = node.get("properties")
    return isinstance(props, Mapping) and set(value) <= set(props)


def error_text(error: Any) -> str:
    """A pydantic ``ValidationError`` as ``field.path: reason`` lines (the first three)."""
    parts = []
    for e in error.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where(loc)}: {e['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
