"""Jobs: the four line shapes, column mappings, files, and errors that name the line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batcher._jobs
from batcher import InputError, Job, UsageError
from batcher._jobs import ColumnOptions, JobSource
from batcher._wire.providers import get_provider
from tests.helpers import write_jsonl, write_parquet
from tests.strategies import expected_gemini, expected_openai, job_specs, render


def _one(row: dict[str, Any], columns: ColumnOptions | None = None) -> Job:
    (job,) = list(JobSource([row], columns))
    return job


@given(spec=job_specs(), shape=st.integers(1, 4))
def test_every_shape_becomes_the_right_request_for_both_providers(
    spec: dict[str, Any], shape: int
) -> None:
    job = _one(render(spec, shape))
    assert job.id == spec["id"]
    assert job.model == spec["model"]
    assert get_provider("openai").build(job, spec["model"]).body == expected_openai(spec)
    gemini = get_provider("gemini").build(job, spec["model"])
    assert gemini.path == f"models/{spec['model']}:generateContent"
    assert gemini.body == expected_gemini(spec)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "doc": st.integers(0, 10**9),
                "text": st.text(min_size=0, max_size=30).filter(lambda s: "\x00" not in s),
                "lang": st.sampled_from(["en", "ja", "fr"]),
            }
        ),
        min_size=1,
        max_size=20,
        unique_by=lambda r: r["doc"],
    ),
    use_template=st.booleans(),
)
def test_parquet_column_mappings_round_trip(rows: list[dict[str, Any]], use_template: bool) -> None:
    template = "Summarize ({lang}): {text}"
    columns = ColumnOptions(
        prompt_template=template if use_template else None,
        prompt_column=None if use_template else "text",
        id_column="doc",
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_parquet(Path(tmp) / "data.parquet", rows)
        source = JobSource([path], columns, default_model="m")
        assert source.scan() == len(rows)
        jobs = list(source)
    assert [j.id for j in jobs] == [str(r["doc"]) for r in rows]
    for job, row in zip(jobs, rows, strict=True):
        want = template.format_map(row) if use_template else row["text"]
        body = get_provider("openai").build(job, "m").body
        assert body["messages"] == [{"role": "user", "content": want}]


def test_position_is_the_id_when_a_line_has_none(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x"}, {"prompt": "y"}])
    assert [j.id for j in JobSource([path])] == ["a.jsonl:1", "a.jsonl:2"]


def test_gzip_and_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl.gz", [{"id": "1", "prompt": "x"}])
    assert [j.id for j in JobSource([path])] == ["1"]
    plain = tmp_path / "b.jsonl"
    plain.write_text('{"id": "1", "prompt": "x"}\n\n   \n{"id": "2", "prompt": "y"}\n')
    assert [j.id for j in JobSource([plain])] == ["1", "2"]


def test_a_jsonl_file_may_start_with_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    import gzip

    lines = b'{"id": "1", "prompt": "x"}\n{"id": "2", "prompt": "y"}\n'
    plain, packed = tmp_path / "bom.jsonl", tmp_path / "bom.jsonl.gz"
    plain.write_bytes(b"\xef\xbb\xbf" + lines)
    packed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + lines))
    assert [j.id for j in JobSource([plain])] == ["1", "2"]
    assert [j.id for j in JobSource([packed])] == ["1", "2"]


def test_bad_lines_are_each_named_with_file_line_and_id(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"id": "ok", "prompt": "fine"}',
                "not json",
                '{"id": "n", "prompt": 5}',
                '{"id": "s", "something": "else"}',
                '{"id": "ok", "prompt": "again"}',
                "[1, 2]",
                '{"id": "nomodel", "prompt": "x"}',
            ]
        )
        + "\n"
    )
    with pytest.raises(InputError) as info:
        JobSource([path]).scan()
    found = {(p.where, p.job_id) for p in info.value.problems}
    assert found == {
        (f"{path}:1", "ok"),  # no model: neither the job nor --model names one
        (f"{path}:2", None),
        (f"{path}:3", "n"),
        (f"{path}:4", "s"),
        (f"{path}:5", "ok"),
        (f"{path}:6", None),
        (f"{path}:7", "nomodel"),
    }
    text = str(info.value)
    assert "not valid JSON" in text and "duplicate id" in text and "unknown shape" in text


def test_a_role_that_is_not_a_string_is_named_not_a_crash() -> None:
    line = {"id": "r", "messages": [{"role": [], "content": "x"}]}
    with pytest.raises(InputError, match=r"messages\[0\]\.role must be system, user or assistant"):
        JobSource([line], default_model="m").scan()


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "jobs.csv").write_text("id,prompt\n")
    with pytest.raises(InputError) as info:
        JobSource([tmp_path / "jobs.csv", tmp_path / "nope.jsonl"], default_model="m").scan()
    assert "unsupported file type" in str(info.value) and "no such file" in str(info.value)


def test_parquet_missing_column_is_named(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", [{"doc": 1, "body_text": "x"}])
    with pytest.raises(InputError, match=r"no column\(s\) \['text'\]"):
        columns = ColumnOptions(prompt_template="{text}", id_column="doc")
        JobSource([path], columns, default_model="m").scan()


def test_prompt_column_and_template_exclude_each_other() -> None:
    with pytest.raises(UsageError):
        ColumnOptions(prompt_column="a", prompt_template="{b}")
    with pytest.raises(UsageError):
        ColumnOptions(prompt_template="no fields")


def test_lossy_conversion_is_refused_before_sending() -> None:
    line = {
        "custom_id": "t",
        "body": {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function"}],
        },
    }
    JobSource([line], provider="openai").scan()  # sent as it is: fine
    with pytest.raises(InputError, match=r"without losing body\.tools; use --provider openai"):
        JobSource([line], provider="gemini").scan()
    gem = {
        "key": "g",
        "request": {
            "contents": [{"parts": [{"text": "x"}]}],
            "safetySettings": [{"category": "X"}],
        },
    }
    with pytest.raises(InputError, match=r"request\.safetySettings"):
        JobSource([gem], provider="openai", default_model="m").scan()


def test_the_default_model_fills_in_only_where_a_job_names_none(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "own", "prompt": "x", "model": "m1"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "row", "prompt": "y"}])
    objects = [Job.from_prompt("obj", "z"), Job.from_prompt("objm", "z", model="m2")]
    for source in (
        JobSource([path, tmp_path / "b.jsonl"], default_model="d"),
        JobSource(objects, default_model="d"),
    ):
        visited: list[Job] = []
        assert source.scan(visited.append) == 2
        assert visited == list(source)
    assert [j.model for j in JobSource([path, tmp_path / "b.jsonl"], default_model="d")] == [
        "m1",
        "d",
    ]
    assert [j.model for j in JobSource(objects, default_model="d")] == ["d", "m2"]
    with pytest.raises(InputError, match=r"jobs\[0\] \(job 'obj'\): no model"):
        JobSource(objects).scan()


def test_the_package_exports() -> None:
    assert batcher._jobs.__all__ == [
        "REASONING_EFFORTS",
        "TASK_TYPES",
        "ColumnOptions",
        "Job",
        "JobSource",
        "Message",
        "NativeRequest",
        "Part",
        "ProviderName",
    ]


def test_native_bodies_are_sent_untouched() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [], "seed": 7}
    job = _one({"custom_id": "t", "method": "POST", "url": "/v1/chat/completions", "body": body})
    assert get_provider("openai").build(job, "m").body == body
    req = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "safetySettings": []}
    job = _one({"key": "g", "request": json.dumps(req)})
    assert get_provider("gemini").build(job, "g1").body == req


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "prompt",
                    "messages",
                    "role",
                    "content",
                    "model",
                    "custom_id",
                    "body",
                    "key",
                    "request",
                    "contents",
                    "parts",
                    "text",
                    "max_tokens",
                    "temperature",
                    "system",
                    "url",
                    "method",
                    "stop",
                    "generationConfig",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)


def _scan_lines(lines: list[bytes]) -> None:
    """Scanning never fails with anything but an InputError naming each bad line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        try:
            total = JobSource([path], default_model="m").scan()
        except InputError as e:
            assert e.problems
            for p in e.problems:
                assert p.where.startswith(f"{path}:")
            return
        assert total == len(list(JobSource([path], default_model="m")))


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")), min_size=1, max_size=8
    )
)
def test_arbitrary_bytes_give_named_input_errors(lines: list[bytes]) -> None:
    _scan_lines(lines)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_JSON_VALUES, min_size=1, max_size=8))
def test_arbitrary_json_lines_give_jobs_or_named_input_errors(values: list[Any]) -> None:
    _scan_lines([json.dumps(v).encode() for v in values])


_plain_values = st.none() | st.text(max_size=5) | st.integers() | st.booleans() | st.floats()


@given(
    st.fixed_dictionaries(
        {"prompt": _plain_values}, optional={"id": _plain_values, "model": _plain_values}
    ),
)
def test_the_fast_path_for_plain_prompt_lines_parses_as_the_general_one(
    row: dict[str, Any],
) -> None:
    """``{id, prompt, model}`` lines skip the general path's lookups: same job, same errors."""
    from batcher._jobs._fields import row_id
    from batcher._jobs._formats import BadRow, _parse_prompt, parse_row

    def general() -> tuple[str, Any]:
        fields, own = _parse_prompt(row, None), row_id(row, "id")
        return own or "pos", fields

    try:
        expected: object = general()
    except BadRow as e:
        expected = ("error", e.message)
    try:
        got: object = parse_row(row, position_id="pos", columns=ColumnOptions())
    except BadRow as e:
        got = ("error", e.message)
    assert got == expected


def test_parquet_without_a_prompt_column_is_one_hint(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "n": i} for i in range(30)]
    path = write_parquet(tmp_path / "d.parquet", rows)
    with pytest.raises(InputError) as info:
        JobSource([path], default_model="m").scan()
    (problem,) = info.value.problems
    assert "--prompt-column" in problem.message and "--prompt-template" in problem.message
    assert "['n', 'text']" in problem.message
    # with a mapping, the same file is read
    assert JobSource([path], ColumnOptions(prompt_column="text"), default_model="m").scan() == 30
