"""Hypothesis strategies shared by the tests: job specs and their four line shapes."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=16)
models = st.sampled_from(["gpt-4o-mini", "gemini-2.5-flash", "m-1"])


@st.composite
def job_specs(draw: st.DrawFn) -> dict[str, Any]:
    """What a job asks for, independent of the line shape that carries it."""
    return {
        "id": draw(ids),
        "prompt": draw(texts),
        "system": draw(st.none() | texts),
        "model": draw(models),
        "temperature": draw(
            st.none() | st.floats(0, 2, allow_nan=False).map(lambda x: round(x, 3))
        ),
        "max_tokens": draw(st.none() | st.integers(1, 4096)),
    }


def render(spec: dict[str, Any], shape: int) -> dict[str, Any]:
    """The spec as a line of ``shape``: 1 prompt, 2 messages, 3 OpenAI batch, 4 Gemini batch."""
    params = {k: spec[k] for k in ("temperature", "max_tokens") if spec[k] is not None}
    messages = [{"role": "user", "content": spec["prompt"]}]
    if spec["system"] is not None:
        messages.insert(0, {"role": "system", "content": spec["system"]})
    if shape == 1:
        line = {"id": spec["id"], "prompt": spec["prompt"], "model": spec["model"], **params}
        if spec["system"] is not None:
            line["system"] = spec["system"]
        return line
    if shape == 2:
        return {"id": spec["id"], "messages": messages, "model": spec["model"], **params}
    if shape == 3:
        body = {"model": spec["model"], "messages": messages, **params}
        return {
            "custom_id": spec["id"],
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": spec["prompt"]}]}]}
    if spec["system"] is not None:
        request["systemInstruction"] = {"parts": [{"text": spec["system"]}]}
    config = {}
    if spec["temperature"] is not None:
        config["temperature"] = spec["temperature"]
    if spec["max_tokens"] is not None:
        config["maxOutputTokens"] = spec["max_tokens"]
    if config:
        request["generationConfig"] = config
    return {"key": spec["id"], "request": request, "model": spec["model"]}


def expected_openai(spec: dict[str, Any]) -> dict[str, Any]:
    """The chat/completions body the spec must become."""
    return render(spec, 3)["body"]


def expected_gemini(spec: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body the spec must become."""
    return render(spec, 4)["request"]


names = st.text(alphabet=string.ascii_lowercase + "_-", min_size=1, max_size=8)


def _leaf_schemas() -> st.SearchStrategy[dict[str, Any]]:
    ints = st.integers(-1000, 1000)
    bounded_int = st.tuples(ints, st.integers(0, 500)).map(
        lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}
    )
    bounded_number = st.tuples(ints, st.integers(0, 500)).map(
        lambda t: {"type": "number", "minimum": t[0], "maximum": t[0] + t[1]}
    )
    enum_values = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True)
    return st.one_of(
        st.just({"type": "string"}),
        st.integers(1, 12).map(lambda n: {"type": "string", "maxLength": n}),
        st.just({"type": "integer"}),
        bounded_int,
        st.just({"type": "number"}),
        bounded_number,
        st.just({"type": "boolean"}),
        enum_values.map(lambda v: {"type": "string", "enum": v}),
        st.just({"enum": [1, 2.5, 3]}),
        st.just({"enum": ["a", 1, True]}),  # mixed: stored as JSON
        st.just({"type": ["string", "null"]}),
        st.just({"anyOf": [{"type": "string"}, {"type": "integer"}]}),  # stored as JSON
    )


def _object(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        props = draw(st.dictionaries(names, children, min_size=1, max_size=4))
        required = [n for n in props if draw(st.booleans())]
        return {"type": "object", "properties": props, "required": required}

    return build()


def json_schemas() -> st.SearchStrategy[dict[str, Any]]:
    """JSON Schemas that OpenAI's strict mode and Gemini both take (an object at the root):
    nested objects and arrays, enums, optional and nullable fields, unions."""
    nested = st.recursive(
        _leaf_schemas(),
        lambda children: st.one_of(
            _object(children),
            st.tuples(children, st.integers(0, 2), st.integers(0, 3)).map(
                lambda t: {
                    "type": "array",
                    "items": t[0],
                    "minItems": t[1],
                    "maxItems": t[1] + t[2],
                }
            ),
            children.map(lambda c: {"anyOf": [c, {"type": "null"}]}),
        ),
        max_leaves=8,
    )
    return _object(nested)
