"""The Arrow side of an output schema: the ``Shape`` of each JSON Schema node, which is the
``parsed`` column's Arrow type and how a valid answer is stored in it and read back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .schema_nodes import Refs, allows_null, alternatives, where

__all__ = ["Shape", "shape_of"]

_INT64 = (-(2**63), 2**63 - 1)


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
                raise ValueError(f"{where(path)}: {value} does not fit a 64-bit integer column")
            return value
        if kind == "double" and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{where(path)}: {type(value).__name__} does not fit a {kind} column")

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


def _enumshape_of(values: list[Any]) -> Shape:
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


def shape_of(node: Any, refs: Refs, seen: tuple[str, ...], path: str) -> Shape:
    if not isinstance(node, Mapping):
        return _JSON
    if "$ref" in node:
        ref, target = refs.resolve(node["$ref"], path)
        if ref in seen:
            return _JSON  # a recursive schema has no fixed Arrow type
        return shape_of(target, refs, (*seen, ref), path)
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        return shape_of(node["allOf"][0], refs, seen, path)
    if "const" in node:
        return _enumshape_of([node["const"]])
    if isinstance(node.get("enum"), list):
        return _enumshape_of(node["enum"])
    branches = alternatives(node)
    if branches is not None:
        real = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        return shape_of(real[0], refs, seen, path) if len(real) == 1 else _JSON
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
        return Shape("list", item=shape_of(node["items"], refs, seen, f"{path}.items"))
    props = node.get("properties")
    if (kind == "object" or kind is None) and isinstance(props, Mapping) and props:
        return Shape(
            "struct",
            fields=tuple(
                (
                    str(name),
                    shape_of(sub, refs, seen, f"{path}.{name}".lstrip(".")),
                    isinstance(sub, Mapping) and allows_null(sub, refs),
                )
                for name, sub in props.items()
            ),
        )
    return _JSON
