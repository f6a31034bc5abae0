"""The output schema: loading, strict mode, each wire's body, validation, the Arrow types."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from batcher import InvalidOutput, SchemaError
from batcher._config.schema import OutputSchema, load_schema
from batcher._rundir.store import ResultStore
from batcher._wire.providers import Completion
from batcher.mock._structured import value_for
from tests.helpers import make_record
from tests.schema_models import Invoice
from tests.strategies import json_schemas, texts


def answer(text: str, finish: str = "stop") -> Completion:
    return Completion(text, finish, 10, 5, "m", text)


ALL_KINDS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer", "minimum": 0},
        "ratio": {"type": "number"},
        "ok": {"type": "boolean"},
        "color": {"enum": ["red", "green"]},
        "level": {"enum": [1, 2, 3]},
        "maybe": {"type": ["string", "null"]},
        "either": {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}]},
        "point": {"$ref": "#/$defs/Point"},
        "points": {"type": "array", "items": {"$ref": "#/$defs/Point"}},
        "mixed": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "free": {"type": "object", "additionalProperties": {"type": "integer"}},
        "anything": {},
        "tree": {"$ref": "#/$defs/Tree"},
    },
    "required": ["name"],
    "$defs": {
        "Point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
        },
        "Tree": {
            "type": "object",
            "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}},
        },
    },
}


def test_arrow_types_follow_the_schema() -> None:
    point = pa.struct([("x", pa.float64()), ("y", pa.float64())])
    assert load_schema(ALL_KINDS).arrow_type() == pa.struct(
        [
            ("name", pa.string()),
            ("count", pa.int64()),
            ("ratio", pa.float64()),
            ("ok", pa.bool_()),
            ("color", pa.string()),
            ("level", pa.int64()),
            ("maybe", pa.string()),
            ("either", point),
            ("point", point),
            ("points", pa.list_(point)),
            ("mixed", pa.string()),  # JSON
            ("free", pa.string()),  # JSON
            ("anything", pa.string()),  # JSON
            ("tree", pa.struct([("kids", pa.list_(pa.string()))])),  # recursion: JSON below
        ]
    )


def test_unmappable_values_are_stored_as_json_and_read_back() -> None:
    schema = load_schema(ALL_KINDS)
    value = {
        "name": "a",
        "mixed": 3,
        "free": {"k": 1},
        "anything": [1, "x"],
        "tree": {"kids": [{"kids": []}]},
    }
    stored = schema.check(answer(json.dumps(value)))
    assert stored["mixed"] == "3" and stored["free"] == '{"k":1}'
    assert stored["tree"] == {"kids": ['{"kids":[]}']}
    # absent fields read back as null where the schema allows null, else stay absent
    assert schema.shape.from_arrow(stored) == {**value, "maybe": None, "either": None}


def test_strict_mode_closes_objects_and_makes_optional_fields_nullable() -> None:
    strict = load_schema(Invoice).strict_schema
    assert strict["additionalProperties"] is False
    assert strict["required"] == ["vendor", "currency", "paid", "lines", "note", "discount"]
    assert strict["properties"]["discount"] == {"title": "Discount", "type": ["integer", "null"]}
    assert strict["properties"]["note"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "title": "Note",
    }
    line = strict["$defs"]["Line"]
    assert line["additionalProperties"] is False and line["required"] == [
        "sku",
        "quantity",
        "price",
    ]
    assert strict["properties"]["lines"]["minItems"] == 1
    enum = load_schema({"type": "object", "properties": {"c": {"enum": ["a", "b"]}}}).strict_schema
    assert enum["properties"]["c"] == {"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]}


def test_constraints_strict_mode_lacks_stay_off_the_wire_and_are_checked_here() -> None:
    schema = load_schema(
        {
            "type": "object",
            "properties": {"s": {"type": "string", "maxLength": 3, "default": "x"}},
            "required": ["s"],
        }
    )
    assert schema.strict_schema["properties"]["s"] == {"type": "string"}
    assert schema.check(answer('{"s": "abc"}')) == {"s": "abc"}
    with pytest.raises(InvalidOutput, match=r"^s: String should have at most 3 characters$"):
        schema.check(answer('{"s": "abcd"}'))


@pytest.mark.parametrize(
    ("schema", "where", "why"),
    [
        ({"type": "array", "items": {"type": "string"}}, "", "needs an object at the root"),
        (
            {"type": "object", "properties": {"a": {"type": "object"}}},
            "properties.a",
            "an object without properties",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "array"}}},
            "properties.a",
            "an array without items",
        ),
        (
            {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
            "properties.a.not",
            "does not support 'not'",
        ),
        (
            {"$defs": {"D": {"type": "object", "properties": {"x": {"type": "string"}},
                             "additionalProperties": True}},
             "type": "object", "properties": {"d": {"$ref": "#/$defs/D"}}},
            "$defs.D.additionalProperties",
            "free-form keys",
        ),
    ],
)  # fmt: skip
def test_what_strict_mode_cannot_express_is_named(
    tmp_path: Path, schema: dict[str, Any], where: str, why: str
) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    loaded = load_schema(path)
    loaded.check_wire("gemini")  # Gemini takes it
    with pytest.raises(SchemaError) as caught:
        loaded.check_wire("openai")
    assert caught.value.source == str(path)
    assert caught.value.path == where
    assert why in caught.value.reason


def test_each_wire_asks_for_the_schema() -> None:
    schema = load_schema(jobs_schema())
    openai = schema.request("openai", {"model": "m", "messages": []})
    assert openai["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Ticket", "schema": schema.strict_schema, "strict": True},
    }
    gemini = schema.request("gemini", {"contents": [], "generationConfig": {"temperature": 0}})
    assert gemini["generationConfig"] == {
        "temperature": 0,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema.json_schema,
    }
    own = {"contents": [], "generationConfig": {"responseSchema": {"type": "STRING"}}}
    assert schema.request("gemini", own) is own  # a native line's own format stays
    mine = {"model": "m", "response_format": {"type": "json_object"}}
    assert schema.request("openai", mine) is mine


def jobs_schema() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    data: dict[str, Any] = json.loads((root / "jobs" / "tickets.schema.json").read_text())
    return data


def test_validation_names_the_field_path_and_reason() -> None:
    for schema in (load_schema(Invoice), load_schema(Invoice.model_json_schema())):
        good = {"vendor": "v", "currency": "EUR", "paid": True, "lines": [
            {"sku": "a", "quantity": 2, "price": 1}]}  # fmt: skip
        assert schema.check(answer(json.dumps(good)))["lines"] == [
            {"sku": "a", "quantity": 2, "price": 1.0}
        ]
        bad = {**good, "lines": [{"sku": "a", "quantity": 0, "price": "x"}], "currency": "GBP"}
        with pytest.raises(InvalidOutput) as caught:
            schema.check(answer(json.dumps(bad)))
        message = str(caught.value)
        assert "currency: Input should be 'EUR', 'USD' or 'JPY'" in message
        assert "lines.0.quantity: Input should be greater than or equal to 1" in message
        assert "lines.0.price: Input should be a valid number" in message
    dict_form = load_schema(Invoice.model_json_schema())
    with pytest.raises(InvalidOutput, match=r"^paid: Input should be a valid boolean$"):
        dict_form.check(answer(json.dumps({**good, "paid": "yes"})))  # no lax coercion
    with pytest.raises(InvalidOutput, match="cut off by max_tokens"):
        dict_form.check(answer(json.dumps(good), "MAX_TOKENS"))
    with pytest.raises(InvalidOutput, match="does not fit a 64-bit integer column"):
        dict_form.check(answer(json.dumps({**good, "discount": 2**70})))


def test_strict_nulls_for_optional_fields_read_as_absent() -> None:
    schema = load_schema(Invoice)
    line = {"sku": "a", "quantity": 1, "price": 0}
    text = json.dumps({"vendor": "v", "currency": "USD", "paid": False, "note": None,
                       "discount": None, "lines": [line]})  # fmt: skip
    stored = schema.check(answer(text))
    assert stored["discount"] == 0  # the model's default, not a null it does not allow
    assert isinstance(schema.instance(stored), Invoice)
    assert schema.instance(stored).note is None


def test_a_schema_from_run_json_is_the_same_schema() -> None:
    schema = load_schema(Invoice)
    again = OutputSchema.from_json(json.loads(json.dumps(schema.to_json())))
    assert again == schema and again.arrow_type() == schema.arrow_type()
    assert again.name == "Invoice" and again.source == "Invoice"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=json_schemas(), prompt=texts)
def test_any_mock_answer_round_trips_through_parquet(
    tmp_path_factory: pytest.TempPathFactory, schema: dict[str, Any], prompt: str
) -> None:
    """Whatever valid answer the mock gives for a generated schema (as either wire sends it),
    the written ``parsed`` column reads back as the same values."""
    loaded = load_schema(schema)
    wires = [schema, loaded.strict_schema]
    if "maxLength" in json.dumps(schema):
        wires.pop()  # strict mode does not carry it: the mock, like a model, may then not fit
    for wire_schema in wires:
        value = value_for(wire_schema, "m", prompt)
        stored = loaded.check(answer(json.dumps(value)))
        out = tmp_path_factory.mktemp("rt")
        store = ResultStore(out, parsed=loaded.arrow_type())
        store.open()
        store.append(replace(make_record(1), parsed=stored))
        store.close()
        table = pq.read_table(out / "results")
        assert table.schema.field("parsed").type == loaded.arrow_type()
        read = table.column("parsed").to_pylist()[0]
        assert read == stored
        assert _without_nulls(loaded.shape.from_arrow(read)) == _without_nulls(value)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
