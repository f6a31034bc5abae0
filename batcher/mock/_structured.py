"""The mock's structured answers: JSON fitting the schema a request sent, made from its prompt.

Deterministic in the model and the prompt: strings are the prompt's words in turn, integers and
numbers lie within ``minimum``/``maximum``, enums and consts are honoured, arrays have between
``minItems`` and ``maxItems`` items, required properties are always there (optional ones are there
or not, nullable ones sometimes null). ``pattern`` and ``format`` are not acted out.

A prompt containing ``[[invalid:N]]`` is answered with something that does not fit for its first
N requests (counted per prompt for as long as the mock runs): the first, third... are not JSON,
the others JSON of the wrong type.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["StructuredAnswers", "schema_of_request", "value_for", "with_schema"]

_INVALID = re.compile(r"\[\[invalid:(\d+)\]\]")
_WORD = re.compile(r"[^\W_]+")
_DEEP = 4
"""Below this depth optional parts are left out, so a recursive schema's answer ends."""


def schema_of_request(body: Mapping[str, Any]) -> Any:
    """The response schema a request asks for, in either wire format, or None.

    OpenAI: ``response_format: {"type": "json_schema", "json_schema": {"schema": ...}}``, or
    on the Responses API ``text: {"format": {"type": "json_schema", "schema": ...}}``;
    Gemini: ``generationConfig.responseJsonSchema`` (or the older ``responseSchema``)."""
    text = body.get("text")
    if isinstance(text, Mapping) and isinstance(text.get("format"), Mapping):
        fmt = text["format"]
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), Mapping):
            return fmt["schema"]
        return None
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        return spec.get("schema") if isinstance(spec, Mapping) else None
    config = body.get("generationConfig", body.get("generation_config"))
    if isinstance(config, Mapping):
        for key in ("responseJsonSchema", "response_json_schema", "responseSchema"):
            if isinstance(config.get(key), Mapping):
                return config[key]
    return None


def with_schema(prompt: str, schema: Mapping[str, Any] | None) -> str:
    """The text a call's input tokens are counted from: the prompt, and the schema, which both
    providers bill as input (Gemini: "the size of the response schema counts towards the input
    token limit", https://ai.google.dev/gemini-api/docs/structured-output)."""
    if schema is None:
        return prompt
    return f"{prompt}\n{json.dumps(schema, ensure_ascii=False, separators=(',', ':'))}"


class _Maker:
    """Makes one value for a schema, drawing words from the prompt and choices from ``rng``."""

    def __init__(self, root: Mapping[str, Any], words: list[str], rng: random.Random) -> None:
        self.root = root
        self.words = words or ["mock"]
        self.rng = rng
        self.next_word = 0

    def word(self) -> str:
        w = self.words[self.next_word % len(self.words)]
        self.next_word += 1
        return w

    def resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = self.root
            for key in ref[2:].split("/"):
                target = target.get(key) if isinstance(target, Mapping) else None
            if isinstance(target, Mapping):
                return target
        return node

    def make(self, node: Any, depth: int = 0) -> Any:
        if not isinstance(node, Mapping):
            return self.word()
        node = self.resolve(node)
        if isinstance(node.get("allOf"), list) and node["allOf"]:
            return self.make(node["allOf"][0], depth)
        if "const" in node:
            return node["const"]
        if isinstance(node.get("enum"), list) and node["enum"]:
            return self.rng.choice(node["enum"])
        branches = node.get("anyOf", node.get("oneOf"))
        kind = node.get("type")
        if isinstance(kind, list):
            branches = [{**node, "type": k} for k in kind]
        if isinstance(branches, list) and branches:
            real = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
            if not real or (
                len(real) < len(branches) and (depth >= _DEEP or self.rng.random() < 0.25)
            ):
                return None
            return self.make(self.rng.choice(real), depth)
        if node.get("nullable") and (depth >= _DEEP or self.rng.random() < 0.25):
            return None
        kind = kind.lower() if isinstance(kind, str) else kind
        if kind == "integer":
            return self._integer(node)
        if kind == "number":
            lo, hi = _bounds(node, 0.0, 1000.0)
            return round(self.rng.uniform(lo, hi), 2) if hi > lo else lo
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        if kind == "array":
            return self._array(node, depth)
        if kind == "object" or isinstance(node.get("properties"), Mapping):
            return self._object(node, depth)
        return self._string(node)

    def _integer(self, node: Mapping[str, Any]) -> int:
        lo, hi = _bounds(node, 0, 100)
        low, high = int(-(-lo // 1)), int(hi // 1)  # the integers within [lo, hi]
        if "exclusiveMinimum" in node and low == node["exclusiveMinimum"]:
            low += 1
        if "exclusiveMaximum" in node and high == node["exclusiveMaximum"]:
            high -= 1
        return self.rng.randint(low, max(low, high))

    def _string(self, node: Mapping[str, Any]) -> str:
        text = self.word()
        low = node.get("minLength")
        while isinstance(low, int) and len(text) < low:
            text += " " + self.word()
        high = node.get("maxLength")
        return text[:high] if isinstance(high, int) else text

    def _array(self, node: Mapping[str, Any], depth: int) -> list[Any]:
        given_low, given_high = node.get("minItems"), node.get("maxItems")
        low: int = given_low if isinstance(given_low, int) else 0
        high: int = given_high if isinstance(given_high, int) else low + 3
        n = low if depth >= _DEEP else self.rng.randint(max(low, min(1, high)), max(low, high))
        return [self.make(node.get("items", {}), depth + 1) for _ in range(n)]

    def _object(self, node: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props = node.get("properties")
        if not isinstance(props, Mapping):
            return {"note": self.word()}  # a free-form object
        required = set(node.get("required") or ())
        out = {}
        for name, sub in props.items():
            if name in required or (depth < _DEEP and self.rng.random() < 0.75):
                out[name] = self.make(sub, depth + 1)
        return out


def _bounds(node: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    lo = node.get("minimum", node.get("exclusiveMinimum"))
    hi = node.get("maximum", node.get("exclusiveMaximum"))
    lo = lo if isinstance(lo, int | float) else None
    hi = hi if isinstance(hi, int | float) else None
    if lo is None and hi is None:
        return low, high
    if lo is None:
        assert hi is not None
        lo = min(low, hi)
    if hi is None:
        hi = max(high, lo)
    return lo, hi


def value_for(schema: Mapping[str, Any], model: str, prompt: str) -> Any:
    """The value the mock answers for ``schema`` on ``model`` to ``prompt``."""
    seed = hashlib.sha256(f"{model}\n{prompt}".encode()).digest()[:8]
    maker = _Maker(schema, _WORD.findall(prompt), random.Random(int.from_bytes(seed, "big")))
    return maker.make(schema)


class StructuredAnswers:
    """The answers to calls that ask for a schema, and the ``[[invalid:N]]`` counters."""

    def __init__(self) -> None:
        self._invalid_seen: dict[str, int] = {}

    def text(self, schema: Mapping[str, Any], model: str, prompt: str) -> str:
        """The answer's text: JSON fitting ``schema``, unless the prompt marks it invalid."""
        if "[[invalid:" in prompt and (m := _INVALID.search(prompt)):
            seen = self._invalid_seen.get(prompt, 0)
            self._invalid_seen[prompt] = seen + 1
            if seen < int(m.group(1)):
                if seen % 2 == 0:
                    return '{"cut": "short'
                return '"a string"' if schema.get("type") in ("integer", "number") else "7"
        return json.dumps(value_for(schema, model, prompt), ensure_ascii=False)
