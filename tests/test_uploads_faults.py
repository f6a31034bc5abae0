"""Uploads that fail, and files not ready at once, in virtual time against the mock: a failed
upload is retried as a request is, a refusal fails only the jobs that need that file, a Files
API down past ``max_outage`` ends the run as an outage (exit 75), and a Gemini video
``PROCESSING`` is waited for until ``ACTIVE`` (or its jobs fail when it is ``FAILED``)."""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batcher import Runner, RunOptions, RunSummary
from batcher._core.errors import Outage
from batcher._engine.uploads import PROCESSING_LIMIT
from batcher.mock import MockConfig, create_app
from batcher.mock._batch_store import FILE_FAIL
from tests.helpers import read_results, write_jsonl
from tests.test_uploads import _pdfs
from tests.virtual import VirtualClock, run_virtual

Answer = Callable[[int, bytes], Awaitable[tuple[int, dict[str, str], bytes] | Exception | None]]
"""What a test's Files API does with the n-th upload (from 1) and its body: an answer of its own
(status, headers, body), an exception raised as the connection's, or None (the mock's answer)."""

MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
"""The head of an MP4 video: enough for its type, which is all the mock reads of it."""


def _is_upload(scope: dict[str, Any]) -> bool:
    """An upload of a file a request names (OpenAI's ``POST /files``, Gemini's resumable one)."""
    path = scope["path"]
    return scope["method"] == "POST" and (path.endswith("/files") or "/upload/" in path)


def _faulty(app: Any, answer: Answer, seen: list[bytes]) -> Any:
    """``app`` with its Files API's uploads first shown to ``answer``; ``seen`` gets each body."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _is_upload(scope):
            await app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen.append(body)
        got = await answer(len(seen), body)
        if isinstance(got, Exception):
            raise got
        if got is not None:
            status, headers, payload = got
            head = [(b"content-type", b"application/json")]
            head += [(k.encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": payload})
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return wrapped


def _run(
    tmp_path: Path, rows: list[dict[str, Any]], app: Any, clock: VirtualClock, **options: Any
) -> RunSummary:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    options.setdefault("base_url", "http://mock.test/v1")
    opts = RunOptions(api_key="sk-test-uploads", **options)

    async def main() -> RunSummary:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=app)
        ) as runner:
            return await runner.run()

    return run_virtual(main)


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return status, {}, json.dumps(body).encode()


FAULTS: dict[str, Callable[[], tuple[int, dict[str, str], bytes] | Exception]] = {
    "503": lambda: _error(503, "The server is overloaded."),
    "429": lambda: (429, {"retry-after": "7"}, _error(429, "Rate limit reached.")[2]),
    "reset": lambda: httpx.ReadError("connection reset by peer"),
    "timeout": lambda: httpx.ReadTimeout("timed out"),
}


@pytest.mark.parametrize("mode", ["online", "batch"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_upload_is_retried_and_its_jobs_answered(
    tmp_path: Path, fault: str, mode: str
) -> None:
    [pdf] = _pdfs(tmp_path, 1)
    rows = [{"id": f"j{q}", "prompt": f"q{q}", "files": [str(tmp_path / pdf)]} for q in range(3)]
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    seen: list[bytes] = []

    async def answer(n: int, body: bytes) -> Any:
        is_batch_input = b'name="purpose"\r\n\r\nbatch' in body
        return FAULTS[fault]() if n <= 2 and not is_batch_input else None

    summary = _run(
        tmp_path, rows, _faulty(app, answer, seen), clock, model="gpt-4o", upload="always",
        mode=mode,
    )  # fmt: skip
    assert (summary.ok, summary.errors, summary.exit_code) == (3, 0, 0)
    got = read_results(tmp_path / "out")
    assert all("[application/pdf sha256:" in r["text"] for r in got.values())
    assert len(app.pipeline.batches.store.mimes) == 1  # the file is kept once
    assert len([b for b in seen if b'name="purpose"\r\n\r\nuser_data' in b]) == 3
    if fault == "429":  # no lane paces an upload: the server's delay is waited, each time
        assert clock.sleeps.count(7.0) == 2


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_a_refused_upload_fails_only_the_jobs_of_that_file_naming_it(
    tmp_path: Path, mode: str
) -> None:
    good, bad = (str(tmp_path / p) for p in _pdfs(tmp_path, 2))
    rows = [{"id": f"g{q}", "prompt": "q", "files": [good]} for q in range(3)]
    rows += [{"id": f"b{q}", "prompt": "q", "files": [bad]} for q in range(3)]
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    seen: list[bytes] = []
    tries: list[int] = []

    async def answer(n: int, body: bytes) -> Any:
        if b'filename="doc1.pdf"' in body:
            tries.append(n)
            return _error(400, "Invalid file: the file could not be parsed.")
        return None

    summary = _run(
        tmp_path, rows, _faulty(app, answer, seen), clock, model="gpt-4o", upload="always",
        mode=mode,
    )  # fmt: skip
    assert (summary.ok, summary.errors, summary.exit_code) == (3, 3, 1)
    got = read_results(tmp_path / "out")
    for q in range(3):
        assert got[f"g{q}"]["error"] is None
        error = got[f"b{q}"]["error"]
        assert got[f"b{q}"]["error_kind"] == "permanent"
        assert "cannot upload its files" in error and "doc1.pdf" in error
        assert "could not be parsed" in error
    assert len(tries) == 1  # refused once: the other jobs of that file are not tried again


def test_a_files_api_down_past_max_outage_ends_the_run_as_an_outage(tmp_path: Path) -> None:
    [pdf] = _pdfs(tmp_path, 1)
    rows = [{"id": f"j{q}", "prompt": "q", "files": [str(tmp_path / pdf)]} for q in range(2)]
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    seen: list[bytes] = []

    async def answer(n: int, body: bytes) -> Any:
        return _error(503, "The server is overloaded.")

    with pytest.raises(Outage, match=r"the Files API at .* stayed unreachable .*overloaded"):
        _run(
            tmp_path, rows, _faulty(app, answer, seen), clock, model="gpt-4o", upload="always",
            max_outage=300.0,
        )  # fmt: skip
    assert len(seen) > 5  # more rounds than one job's attempts
    assert sum(clock.sleeps) >= 300.0
    records = tmp_path / "out" / "uploads.jsonl"
    assert not records.exists() or not records.read_text()  # nothing went up


def _gemini_run(
    tmp_path: Path, rows: list[dict[str, Any]], app: Any, clock: VirtualClock, **options: Any
) -> RunSummary:
    return _run(
        tmp_path, rows, app, clock, provider="gemini", model="gemini-2.5-flash",
        base_url="http://mock.test/v1beta", **options,
    )  # fmt: skip


def _state_reads(app: Any, seen: list[str]) -> Any:
    """``app`` listing in ``seen`` the paths of its Files API's ``GET /v1beta/files/{id}``."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and "/files/" in scope["path"]:
            seen.append(scope["path"])
        await app(scope, receive, send)

    return wrapped


def _within(sleeps: list[float], mine: list[float]) -> bool:
    """Whether ``mine`` are among ``sleeps`` in that order (the run sleeps for other things)."""
    left = iter(sleeps)
    return all(any(x == want for x in left) for want in mine)


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_a_gemini_video_is_named_only_once_active(tmp_path: Path, mode: str) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(MP4)
    rows = [{"id": f"j{q}", "prompt": f"q{q}", "files": [str(video)]} for q in range(3)]
    clock = VirtualClock()
    app = create_app(MockConfig(file_processing=30.0), clock=clock.time)
    reads: list[str] = []
    summary = _gemini_run(tmp_path, rows, _state_reads(app, reads), clock, mode=mode)
    assert (summary.ok, summary.errors) == (3, 0)
    got = read_results(tmp_path / "out")
    assert all("[video/mp4 sha256:" in r["text"] for r in got.values())
    assert all(r["attempts"] == 1 for r in got.values())  # never refused as not ready
    assert len(app.pipeline.batches.store.mimes) == 1  # uploaded once (auto: video always)
    # read again after 1 s, then at doubling intervals up to 10 s, until ACTIVE at 30 s
    assert _within(clock.sleeps, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
    assert len(reads) == 6  # at 1, 3, 7, 15, 25 and 35 s: ACTIVE at 30 s
    records = (tmp_path / "out" / "uploads.jsonl").read_text().splitlines()
    assert len(records) == 1


def test_a_gemini_video_that_failed_processing_fails_its_jobs_naming_it(tmp_path: Path) -> None:
    video, other = tmp_path / "broken.mp4", tmp_path / "fine.mp4"
    video.write_bytes(MP4 + FILE_FAIL)
    other.write_bytes(MP4)
    rows = [{"id": f"b{q}", "prompt": "q", "files": [str(video)]} for q in range(2)]
    rows.append({"id": "f", "prompt": "q", "files": [str(other)]})
    clock = VirtualClock()
    app = create_app(MockConfig(file_processing=5.0), clock=clock.time)
    summary = _gemini_run(tmp_path, rows, app, clock)
    assert (summary.ok, summary.errors, summary.exit_code) == (1, 2, 1)
    got = read_results(tmp_path / "out")
    for q in range(2):
        error = got[f"b{q}"]["error"]
        assert "broken.mp4" in error and "FAILED" in error
        assert got[f"b{q}"]["error_kind"] == "permanent"
    assert got["f"]["error"] is None


def test_a_gemini_video_processing_too_long_fails_its_jobs(tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    video.write_bytes(MP4)
    rows = [{"id": "j", "prompt": "q", "files": [str(video)]}]
    clock = VirtualClock()
    app = create_app(MockConfig(file_processing=2 * PROCESSING_LIMIT), clock=clock.time)
    reads: list[str] = []
    summary = _gemini_run(tmp_path, rows, _state_reads(app, reads), clock)
    assert (summary.ok, summary.errors) == (0, 1)
    error = read_results(tmp_path / "out")["j"]["error"]
    assert "long.mp4" in error and "PROCESSING" in error
    # 1 + 2 + 4 + 8 s, then every 10 s up to the limit: then no more
    assert len(reads) == 4 + math.ceil((PROCESSING_LIMIT - 15) / 10)


def test_ctrl_c_while_a_video_is_processing_leaves_its_jobs_for_a_rerun(tmp_path: Path) -> None:
    video = tmp_path / "slow.mp4"
    video.write_bytes(MP4)
    rows = [{"id": f"j{q}", "prompt": "q", "files": [str(video)]} for q in range(2)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    clock = VirtualClock()
    app = create_app(MockConfig(file_processing=3600.0), clock=clock.time)
    opts = RunOptions(
        api_key="sk-test-uploads", provider="gemini", model="gemini-2.5-flash",
        base_url="http://mock.test/v1beta",
    )  # fmt: skip
    stopped_at: list[float] = []

    async def main() -> tuple[RunSummary, float]:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=app)
        ) as runner:

            async def ctrl_c() -> None:
                await anyio.sleep(60.0)
                stopped_at.append(clock.monotonic())
                runner.stop(signal.SIGINT)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ctrl_c)
                summary = await runner.run()
            return summary, clock.monotonic()

    summary, ended = run_virtual(main)
    assert (summary.ok, summary.errors) == (0, 0)  # left for a rerun, not failed
    assert ended - stopped_at[0] < 5.0  # not kept waiting for the file
    assert not (tmp_path / "out" / "uploads.jsonl").exists()


def test_auto_sends_a_file_inline_when_the_files_api_is_down(tmp_path: Path) -> None:
    """A file ``auto`` chose (a second use) but that can go inline is not worth waiting an
    outage for: after one round of retries it goes inline, and so do later ones."""
    [pdf] = _pdfs(tmp_path, 1)
    rows = [{"id": f"j{q}", "prompt": "q", "files": [str(tmp_path / pdf)]} for q in range(4)]
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    seen: list[bytes] = []

    async def answer(n: int, body: bytes) -> Any:
        return _error(503, "The server is overloaded.")

    summary = _run(tmp_path, rows, _faulty(app, answer, seen), clock, model="gpt-4o")
    assert (summary.ok, summary.errors, summary.exit_code) == (4, 0, 0)
    assert 1 < len(seen) <= 5  # one round of the run's attempts, once
    assert sum(clock.sleeps) < 300.0  # not an outage's wait
