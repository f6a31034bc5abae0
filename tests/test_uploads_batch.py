"""Files through the Files APIs in batch mode (``--upload`` with ``--mode batch|auto``), on the
mock: a batch's lines name each file by id, uploaded once before the input file is cut, recorded
in DIR/uploads.jsonl, and named again by a rerun only while it outlives a batch."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from batcher._engine.uploads import BATCH_MARGIN
from batcher.mock import MockConfig, MockServer
from tests.helpers import read_results, run_cli, write_jsonl
from tests.test_media import PNG
from tests.test_uploads import _jobs, _pdfs, _records

pytestmark = pytest.mark.usefixtures("api_keys")


def _lines(server: MockServer) -> list[dict[str, Any]]:
    """The request bodies of every batch line the mock was sent."""
    return [body for b in server._pipeline.batches.batches.values() for _, body in b.lines]


def _named(body: dict[str, Any]) -> list[str]:
    """The file ids (OpenAI) or uris (Gemini) a request body names."""
    found: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            if isinstance(x.get("file_id"), str):
                found.append(x["file_id"])
            if isinstance(x.get("fileUri"), str):
                found.append(x["fileUri"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(body)
    return found


@pytest.mark.parametrize(
    ("provider", "argv"),
    [("openai", ()), ("openai", ("--endpoint", "responses")), ("gemini", ())],
)
def test_batch_lines_name_each_file_uploaded_once(
    tmp_path: Path, mock_server: MockServer, provider: str, argv: tuple[str, ...]
) -> None:
    pdfs = _pdfs(tmp_path, 3)
    jobs = _jobs(tmp_path, pdfs, per=4)
    out = tmp_path / "out"
    model = "gemini-2.5-flash" if provider == "gemini" else "gpt-4o"
    flags = (*argv, "--model", model, "--upload", "always", "--mode", "batch")
    assert run_cli(mock_server, provider, jobs, out, *flags) == 0
    got = read_results(out)
    assert len(got) == 12
    assert all(row["via"] == "batch" and row["error"] is None for row in got.values())
    for job_id, row in got.items():  # each answer saw its own file's bytes
        pdf = job_id.rpartition("-")[0]
        digest = hashlib.sha256((tmp_path / pdf).read_bytes()).hexdigest()
        assert f"[application/pdf sha256:{digest[:12]}]" in row["text"]
    assert len(mock_server.uploaded) == 3  # the input file is not among them
    records = _records(out)
    assert len({r["digest"] for r in records}) == len(records) == 3
    lines = _lines(mock_server)
    assert len(lines) == 12
    refs = {r["ref"] for r in records}
    for body in lines:
        [named] = _named(body)
        assert named in refs
        assert "base64" not in json.dumps(body) and "inlineData" not in json.dumps(body)


def test_auto_in_batch_mode_uploads_a_shared_file_and_inlines_one_used_once(
    tmp_path: Path, mock_server: MockServer
) -> None:
    shared, single = _pdfs(tmp_path, 2)
    rows = [{"id": f"s{q}", "prompt": "q", "files": [shared]} for q in range(5)]
    rows.append({"id": "one", "prompt": "q", "files": [single]})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, "--model", "gpt-4o", "--mode", "batch") == 0
    assert len(read_results(out)) == 6
    assert list(mock_server.uploaded.values()) == [(tmp_path / shared).stat().st_size]
    named = [len(_named(body)) for body in _lines(mock_server)]
    assert sorted(named) == [0, 0, 1, 1, 1, 1]  # the first use of each went inline


def test_a_file_over_the_inline_limit_goes_up_for_a_batch(
    tmp_path: Path, mock_server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batcher._core.media as media

    monkeypatch.setitem(media.INLINE_LIMIT, "openai", 1000)
    jobs = _jobs(tmp_path, _pdfs(tmp_path, 1, size=2000), per=1)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, "--model", "gpt-4o", "--mode", "batch") == 0
    [row] = read_results(out).values()
    assert row["via"] == "batch" and "[application/pdf sha256:" in row["text"]
    assert len(mock_server.uploaded) == 1


@pytest.mark.parametrize(("ttl_hours", "again"), [(48, 0), (24, 2)])
def test_a_batch_names_a_recorded_file_only_if_it_outlives_the_batch(
    tmp_path: Path, start_mock: Any, ttl_hours: int, again: int
) -> None:
    """A file a rerun finds with 48 h left is named again; one with 24 h left (less than a
    batch may take) is uploaded again, though an online rerun would still name it."""
    assert 24 * 3600 < BATCH_MARGIN < 48 * 3600
    server = start_mock(MockConfig(file_ttl=ttl_hours * 3600.0))
    pdfs = _pdfs(tmp_path, 2)
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    flags = ("--model", "gemini-2.5-flash", "--upload", "always")
    assert run_cli(server, "gemini", _jobs(tmp_path, pdfs, 2), first, *flags) == 0
    assert len(server.uploaded) == 2
    for folder in (second, third):
        folder.mkdir()
        shutil.copy(first / "uploads.jsonl", folder / "uploads.jsonl")
    rerun = _jobs(tmp_path, pdfs, 3, "b.jsonl")
    assert run_cli(server, "gemini", rerun, second, *flags, "--mode", "batch") == 0
    got = read_results(second)
    assert len(got) == 6 and all(r["error"] is None for r in got.values())
    assert len(server.uploaded) == 2 + again
    assert run_cli(server, "gemini", rerun, third, *flags) == 0  # online: an hour is enough
    assert len(server.uploaded) == 2 + again


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_the_responses_api_names_an_uploaded_image_by_id(
    tmp_path: Path, mock_server: MockServer, mode: str
) -> None:
    """Its ``input_image`` takes a ``file_id`` (chat's ``image_url`` does not): an image goes up
    once, for "vision", and every request names it."""
    (tmp_path / "pic.png").write_bytes(PNG)
    rows = [{"id": f"j{q}", "prompt": f"q{q}", "images": ["pic.png"]} for q in range(3)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--endpoint", "responses", "--model", "gpt-4o", "--upload", "always", "--mode", mode)
    assert run_cli(mock_server, "openai", jobs, out, *flags) == 0
    got = read_results(out)
    assert len(got) == 3 and all("[image/png 40x30 sha256:" in r["text"] for r in got.values())
    assert list(mock_server.uploaded.values()) == [len(PNG)]
    [record] = _records(out)
    assert record["mime"] == "image/png"
    if mode == "batch":
        for body in _lines(mock_server):
            [part] = [p for m in body["input"] for p in m["content"] if p["type"] != "input_text"]
            assert part == {"type": "input_image", "file_id": record["ref"], "detail": "auto"}


def test_chat_still_sends_images_inline(tmp_path: Path, mock_server: MockServer) -> None:
    (tmp_path / "pic.png").write_bytes(PNG)
    rows = [{"id": f"j{q}", "prompt": "q", "images": ["pic.png"]} for q in range(2)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    flags = ("--model", "gpt-4o", "--upload", "always", "--mode", "batch")
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out", *flags) == 0
    assert mock_server.uploaded == {}
