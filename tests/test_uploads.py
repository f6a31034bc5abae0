"""Files sent through the providers' Files APIs (``--upload``), on the mock: each distinct file
uploaded once, its id recorded in DIR and named again by a rerun while it lives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batcher._cli.exits import EXIT_USAGE
from batcher.mock import MockConfig, MockServer
from tests.helpers import read_results, run_cli, write_jsonl
from tests.test_media import PDF

pytestmark = pytest.mark.usefixtures("api_keys")


def _pdfs(folder: Path, n: int, size: int = 0) -> list[str]:
    """``n`` distinct PDFs in ``folder`` (each ``size`` bytes at least), by name."""
    names = []
    for i in range(n):
        name = f"doc{i}.pdf"
        (folder / name).write_bytes(PDF + f"%{i}\n".encode() + b"%" * size)
        names.append(name)
    return names


def _jobs(folder: Path, pdfs: list[str], per: int, name: str = "jobs.jsonl") -> Path:
    rows = [
        {"id": f"{pdf}-{q}", "prompt": f"question {q}", "files": [pdf]}
        for pdf in pdfs
        for q in range(per)
    ]
    return write_jsonl(folder / name, rows)


def _records(out: Path) -> list[dict[str, object]]:
    lines = (out / "uploads.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("provider", "argv"),
    [("openai", ()), ("openai", ("--endpoint", "responses")), ("gemini", ())],
)
def test_each_distinct_file_is_uploaded_once_across_many_jobs(
    tmp_path: Path, mock_server: MockServer, provider: str, argv: tuple[str, ...]
) -> None:
    jobs = _jobs(tmp_path, _pdfs(tmp_path, 3), per=6)
    out = tmp_path / "out"
    model = "gemini-2.5-flash" if provider == "gemini" else "gpt-4o"
    flags = (*argv, "--model", model, "--upload", "always")
    assert run_cli(mock_server, provider, jobs, out, *flags) == 0
    got = read_results(out)
    assert len(got) == 18
    assert all("[application/pdf sha256:" in row["text"] for row in got.values())
    assert len(mock_server.uploaded) == 3
    assert len({r["digest"] for r in _records(out)}) == 3


def test_auto_uploads_a_file_shared_by_many_jobs_and_inlines_one_used_once(
    tmp_path: Path, mock_server: MockServer
) -> None:
    shared, single = _pdfs(tmp_path, 2)
    rows = [{"id": f"s{q}", "prompt": "q", "files": [shared]} for q in range(10)]
    rows.append({"id": "one", "prompt": "q", "files": [single]})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, "--model", "gpt-4o") == 0
    assert len(read_results(out)) == 11
    assert list(mock_server.uploaded.values()) == [(tmp_path / shared).stat().st_size]


def test_a_rerun_names_the_recorded_files_while_they_live(
    tmp_path: Path, start_mock: object
) -> None:
    server = start_mock(MockConfig())  # type: ignore[operator]
    pdfs = _pdfs(tmp_path, 2)
    first, second = tmp_path / "first", tmp_path / "second"
    flags = ("--model", "gpt-4o", "--upload", "always")
    assert run_cli(server, "openai", _jobs(tmp_path, pdfs, 3), first, *flags) == 0
    assert len(server.uploaded) == 2
    second.mkdir()
    shutil.copy(first / "uploads.jsonl", second / "uploads.jsonl")
    again = _jobs(tmp_path, pdfs, 4, "again.jsonl")
    assert run_cli(server, "openai", again, second, *flags) == 0
    assert len(read_results(second)) == 8
    assert len(server.uploaded) == 2  # nothing uploaded again


def test_a_file_about_to_expire_is_uploaded_again(tmp_path: Path, start_mock: object) -> None:
    # the mock keeps files half an hour: live for the first run, too close to expiry to name
    server = start_mock(MockConfig(file_ttl=1800.0))  # type: ignore[operator]
    pdfs = _pdfs(tmp_path, 2)
    first, second = tmp_path / "first", tmp_path / "second"
    flags = ("--model", "gpt-4o", "--upload", "always")
    assert run_cli(server, "openai", _jobs(tmp_path, pdfs, 3), first, *flags) == 0
    assert len(read_results(first)) == 6
    second.mkdir()
    shutil.copy(first / "uploads.jsonl", second / "uploads.jsonl")
    assert run_cli(server, "openai", _jobs(tmp_path, pdfs, 2, "b.jsonl"), second, *flags) == 0
    assert len(read_results(second)) == 4
    assert len(server.uploaded) == 4
    assert len(_records(second)) == 4  # the old two and the new two


def test_a_file_over_the_inline_limit_goes_by_upload_and_never_refuses_it(
    tmp_path: Path, mock_server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batcher._core.media as media

    monkeypatch.setitem(media.INLINE_LIMIT, "openai", 1000)
    jobs = _jobs(tmp_path, _pdfs(tmp_path, 1, size=2000), per=1)
    flags = ("--model", "gpt-4o")
    out = tmp_path / "never"
    assert run_cli(mock_server, "openai", jobs, out, *flags, "--upload", "never") == EXIT_USAGE
    assert mock_server.uploaded == {}
    out = tmp_path / "auto"
    assert run_cli(mock_server, "openai", jobs, out, *flags) == 0
    [row] = read_results(out).values()
    assert "[application/pdf sha256:" in row["text"]
    assert len(mock_server.uploaded) == 1


def test_a_file_the_provider_no_longer_has_is_uploaded_again(
    tmp_path: Path, start_mock: object
) -> None:
    server = start_mock(MockConfig())  # type: ignore[operator]
    pdfs = _pdfs(tmp_path, 1)
    first, second = tmp_path / "first", tmp_path / "second"
    flags = ("--model", "gpt-4o", "--upload", "always")
    assert run_cli(server, "openai", _jobs(tmp_path, pdfs, 2), first, *flags) == 0
    server._pipeline.batches.store.mimes.clear()  # deleted on the provider's side
    second.mkdir()
    shutil.copy(first / "uploads.jsonl", second / "uploads.jsonl")
    assert run_cli(server, "openai", _jobs(tmp_path, pdfs, 3, "b.jsonl"), second, *flags) == 0
    got = read_results(second)
    assert all(row["error"] is None for row in got.values()) and len(got) == 3
    assert len(server.uploaded) == 1  # uploaded again once, for all three jobs
