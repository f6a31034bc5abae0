"""Reading a JSON Schema node, for the walkers over an output schema (``schema_arrow``,
``schema_strict``, ``schema_check``): local ``$ref`` resolution, a union's alternatives, whether
a node allows null, and a node's path as messages print it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.errors import SchemaError

__all__ = ["Refs", "allows_null", "alternatives", "where"]


def where(path: str) -> str:
    return path or "(root)"


class Refs:
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


def alternatives(node: Mapping[str, Any]) -> list[Any] | None:
    """The alternatives of a union (``anyOf``, or ``oneOf`` read as ``anyOf``), if it is one."""
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            return list(node[key])
    return None


def allows_null(node: Mapping[str, Any], refs: Refs, path: str = "") -> bool:
    if "$ref" in node:
        return allows_null(refs.resolve(node["$ref"], path)[1], refs, path)
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind) or node.get("nullable"):
        return True
    if "enum" in node and isinstance(node["enum"], list):
        return None in node["enum"]
    branches = alternatives(node)
    return branches is not None and any(
        isinstance(b, Mapping) and allows_null(b, refs, path) for b in branches
    )
