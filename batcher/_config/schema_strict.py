"""An output schema as OpenAI's strict mode takes it (every object closed, every property
required, optional ones made nullable), or a ``SchemaError`` naming what strict mode cannot
express. https://platform.openai.com/docs/guides/structured-outputs#supported-schemas
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.errors import SchemaError
from .schema_nodes import Refs, allows_null

__all__ = ["strict_schema"]

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


def _nullable(node: dict[str, Any], refs: Refs) -> dict[str, Any]:
    """``node`` allowing null too: how strict mode spells an optional property."""
    if allows_null(node, refs):
        return node
    kind = node.get("type")
    if kind is not None and not any(k in node for k in ("enum", "const", "anyOf", "$ref")):
        return {**node, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}
    if isinstance(node.get("anyOf"), list):
        return {**node, "anyOf": [*node["anyOf"], {"type": "null"}]}
    return {"anyOf": [node, {"type": "null"}]}


def strict_schema(node: Any, refs: Refs, path: str) -> dict[str, Any]:
    """``node`` as OpenAI's strict mode requires: every object closed (``additionalProperties:
    false``) with every property required, optional ones made nullable; ``SchemaError`` naming
    the path for what strict mode cannot express.
    https://platform.openai.com/docs/guides/structured-outputs#supported-schemas"""
    source = refs.source
    if not isinstance(node, Mapping):
        raise SchemaError(source, path, "a schema must be a JSON object")
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        return strict_schema({**merged, **node["allOf"][0]}, refs, path)
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
            out[key] = {n: strict_schema(s, refs, f"{here}.{n}") for n, s in value.items()}
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            out["anyOf"] = [strict_schema(s, refs, f"{here}.{i}") for i, s in enumerate(value)]
        elif key == "items":
            out[key] = strict_schema(value, refs, here)
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
            strict = strict_schema(sub, refs, f"{path}.properties.{name}".lstrip("."))
            out["properties"][name] = strict if name in required else _nullable(strict, refs)
        out["required"] = list(props)
        out["additionalProperties"] = False
    if "array" in kinds and "items" not in node:
        raise SchemaError(source, path, "strict mode cannot express an array without items")
    return out
