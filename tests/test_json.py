"""The hot path's JSON (orjson) keeps the standard library's meaning: what it reads and writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batcher._core.codec import canonical, dumps, loads
from batcher.mock import MockServer

from .helpers import mock_stats, run_cli, write_parquet

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: those go the standard library's way
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json_data = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json_data)
def test_what_is_written_reads_back_the_same_by_either_library(value: object) -> None:
    data = dumps(value)
    assert loads(data) == value
    assert json.loads(data) == value
    assert b"\n" not in data  # one journal line


@given(_json_data)
def test_it_reads_what_the_standard_library_wrote_exactly(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert loads(text.encode()) == value
    assert loads(text) == value


@pytest.mark.parametrize("text", [b"NaN", b'{"t": Infinity}', b"[-Infinity]", b"{", b"\xff"])
def test_what_is_not_json_is_refused_as_a_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        loads(text)
    with pytest.raises(json.JSONDecodeError):  # what callers of the standard library catch
        loads(text)


@pytest.mark.usefixtures("api_keys")
def test_jobs_with_numbers_that_are_not_finite_are_refused_naming_their_lines(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN is not JSON (the standard library read it, and sending it failed); a Parquet column
    can hold one as a float."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"id": "a", "prompt": "hi", "model": "m"}\n'
        '{"id": "b", "prompt": "hi", "model": "m", "temperature": NaN}\n'
    )
    table = tmp_path / "jobs.parquet"
    write_parquet(table, [{"id": "c", "prompt": "hi", "model": "m", "top_p": math.inf}])
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out") == 2
    assert f"{jobs}:2: not valid JSON" in capsys.readouterr().err
    assert run_cli(mock_server, "openai", table, tmp_path / "out2") == 2
    assert "'top_p' must be a finite number, got inf" in capsys.readouterr().err
    assert mock_stats(mock_server)["requests"] == 0


_any_float = st.floats(allow_nan=False, allow_infinity=False) | st.builds(
    lambda m, e: m * 10.0**e, st.floats(-10, 10, allow_nan=False), st.integers(-30, 30)
)
_request_like = st.recursive(
    st.none() | st.booleans() | st.integers() | _any_float | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=24,
)


@given(_request_like)
def test_canonical_text_is_the_standard_library_s_byte_for_byte(value: object) -> None:
    """Every stored fingerprint hashes the standard library's text: the fast path must agree."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(value) == expected.encode()
