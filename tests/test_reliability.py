"""Nothing lost, nothing raw: the promises of the README's section of that name, end to end.

Each test drives the CLI as a user would (in-process through ``batcher._cli.main.main``, or as
``python -m batcher`` where a second process, a kill or a full disk is needed) against the mock
provider over loopback: one run per directory, a disk that fills mid-run, a damaged results part
or journal segment, an unreadable ``run.json`` / ``ledger.json``, and an endpoint that is down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batcher._cli.main import main
from batcher._rundir.results import iter_status
from batcher.mock import MockConfig, MockServer
from tests.helpers import mock_stats, read_results, run_cli, run_command, write_jsonl

StartMock = Callable[[MockConfig], MockServer]

pytestmark = pytest.mark.usefixtures("api_keys")


def _jobs(path: Path, n: int, *, start: int = 0, id_size: int = 0) -> tuple[Path, set[str]]:
    """``n`` jobs for model ``m``; ``id_size`` pads each id, to make every result row large."""
    ids = {f"r{i:05d}" + "x" * id_size for i in range(start, start + n)}
    return _write_jobs(path, ids), ids


def _write_jobs(path: Path, ids: set[str]) -> Path:
    rows = [{"id": k, "prompt": f"reliability prompt {k[:6]}", "model": "m"} for k in sorted(ids)]
    return write_jsonl(path, rows)


def _env() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-reliability"}


def _journal_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / "journal").glob("seg-*.jsonl"))


def _wait_for(what: str, ready: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def _kept_ids(out: Path) -> set[str]:
    """The ids a run has kept (parts and journal), read as ``batcher status`` reads them."""
    return {row[0] for row in iter_status(out)}


# 1. One run per directory


def test_a_second_run_on_a_held_directory_exits_2_at_once_and_sends_and_writes_nothing(
    tmp_path: Path, start_mock: StartMock, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_mock(MockConfig(latency_ms=(50.0, 100.0)))
    jobs, ids = _jobs(tmp_path / "jobs.jsonl", 200)
    out = tmp_path / "out"
    first = subprocess.Popen(
        run_command(jobs, out, server.base_url("openai"), "--max-concurrency", "4"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for("the first run to finish some jobs", lambda: _journal_lines(out) >= 5)
        manifest = out / "run.json"
        before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
        lock = (out / ".lock").read_bytes()
        names = {p.name for p in out.iterdir()}
        capsys.readouterr()

        code = run_cli(server, "openai", jobs, out, "--max-concurrency", "4")
        err = capsys.readouterr().err
        assert code == 2, err
        assert first.poll() is None, "the second run waited for the first to end"
        [line] = err.strip().splitlines()
        assert f"{out} is in use by another batcher run (pid {first.pid}, since " in line
        assert "Traceback" not in err
        # it wrote nothing: the first run's manifest and lock are as they were, nothing new
        assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before
        assert (out / ".lock").read_bytes() == lock
        new = {p.name for p in out.iterdir()} - names
        assert new <= {"ledger.json", "ledger.json.tmp", "results"}, new  # the first run's

        assert main(["status", str(out)]) == 0
        report = capsys.readouterr().out
        assert f"running now (pid {first.pid}" in report
        assert "done " in report and "/ 200" in report
        assert first.poll() is None

        _, first_err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, first_err
    assert "Traceback" not in first_err
    assert set(read_results(out)) == ids  # each id exactly once
    assert mock_stats(server)["requests"] == len(ids)  # the second run sent nothing


# 2. Disk full mid-run


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs; it is unmounted after the test."""
    where = tmp_path / "disk"
    where.mkdir()
    mount = shutil.which("mount")
    why = "no mount command"
    if mount is not None:
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        why = done.stderr.strip() or f"mount exited with {done.returncode}"
    if not os.path.ismount(where):
        reason = f"cannot mount a small tmpfs (needs root): {why}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        unmounted = subprocess.run(["umount", str(where)], capture_output=True, check=False)
        if unmounted.returncode != 0:  # still busy: detach it now, free it when it is not
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_a_full_disk_stops_the_run_with_exit_74_and_a_rerun_finishes_every_job_once(
    tmp_path: Path, small_disk: Path, mock_server: MockServer
) -> None:
    # ids of 1 KiB make each result row about 2 KiB: 300 rows cannot fit in 256 KiB
    jobs, ids = _jobs(tmp_path / "jobs.jsonl", 300, id_size=1024)
    out = small_disk / "out"
    command = run_command(jobs, out, mock_server.base_url("openai"), "--max-concurrency", "4")
    full = subprocess.run(
        command, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert full.returncode == 74, full.stderr
    assert "Traceback" not in full.stderr
    [line] = _lines_with(full.stderr, "No space left on device")
    written = re.search(r"could not write (\S+): No space left on device", line)
    assert written is not None, line
    assert Path(written.group(1)).is_relative_to(out), line
    kept = _kept_ids(out)
    sent = mock_stats(mock_server)["requests"]
    assert kept < ids
    assert sent - len(kept) <= 4 + 1  # only what was in flight when the write failed is lost

    subprocess.run(
        ["mount", "-o", "remount,size=64m", str(small_disk)], check=True, capture_output=True
    )
    again = subprocess.run(
        command, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 0, again.stderr
    results = read_results(out)  # each id exactly once
    assert set(results) == ids
    assert all(row["status"] == "ok" for row in results.values())
    assert mock_stats(mock_server)["requests"] - sent == len(ids) - len(kept)


# 3. Damaged results part, garbage in a journal segment


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_part_is_reported_by_status_then_set_aside_and_its_jobs_sent_again(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    jobs, first_ids = _jobs(tmp_path / "jobs.jsonl", 15)
    assert run_cli(mock_server, "openai", jobs, out) == 0
    jobs, second_ids = _jobs(tmp_path / "jobs.jsonl", 15, start=100)
    assert run_cli(mock_server, "openai", jobs, out) == 0  # a second part
    parts = sorted((out / "results").glob("part-*.parquet"))
    assert len(parts) == 2, parts
    damaged = parts[0]
    _truncate(damaged)
    torn = damaged.read_bytes()
    capsys.readouterr()

    assert main(["status", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"damaged: {damaged}" in captured.out
    assert "Traceback" not in captured.err
    assert damaged.read_bytes() == torn  # status only reports it

    jobs = _write_jobs(tmp_path / "jobs.jsonl", first_ids | second_ids)
    sent = mock_stats(mock_server)["requests"]
    assert run_cli(mock_server, "openai", jobs, out) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert not damaged.exists()
    assert (out / "damaged" / damaged.name).read_bytes() == torn
    assert set(read_results(out)) == first_ids | second_ids  # each id exactly once
    assert mock_stats(mock_server)["requests"] - sent == len(first_ids)  # the damaged part's


def test_garbage_in_the_middle_of_a_killed_runs_segment_is_skipped_and_every_line_kept(
    tmp_path: Path, start_mock: StartMock
) -> None:
    server = start_mock(MockConfig(latency_ms=(20.0, 60.0)))
    jobs, ids = _jobs(tmp_path / "jobs.jsonl", 400)
    out = tmp_path / "out"
    killed = subprocess.Popen(
        run_command(jobs, out, server.base_url("openai"), "--max-concurrency", "4"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for("the run to finish some jobs", lambda: _journal_lines(out) >= 40)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
    server.wait_idle()  # every request the killed run sent is counted before the rerun's
    [segment] = sorted((out / "journal").glob("seg-*.jsonl"))
    lines = segment.read_bytes().split(b"\n")
    complete = lines[:-1]  # the last piece has no newline: torn by the kill, or empty
    kept = {json.loads(line)["id"] for line in complete}
    assert len(kept) >= 40
    middle = len(complete) // 2
    garbage = [b"\x00\xff{ not json \xfe", b'{"id": "half", "sta']
    segment.write_bytes(b"\n".join([*lines[:middle], *garbage, *lines[middle:]]))
    sent = mock_stats(server)["requests"]

    assert run_cli(server, "openai", jobs, out, "--max-concurrency", "16") == 0
    assert set(read_results(out)) == ids  # each id exactly once
    assert mock_stats(server)["requests"] - sent == len(ids) - len(kept)  # every good line kept


# 4. Damaged run.json / ledger.json


DAMAGE = {
    "torn": b'{"provider": "openai", "tot',
    "binary": b"\xff\xfe\x00garbage",
    "empty": b"",
    "not-an-object": b"[1, 2]",
    "too-deep": b"[" * 100_000 + b"]" * 100_000,  # JSON, but deeper than the parser goes
}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        *((name, content) for name in ("run.json", "ledger.json") for content in DAMAGE.values()),
        ("run.json", b'{"provider": "openai", "total": 1e400}'),
    ],
    ids=[
        *(f"{name}-{what}" for name in ("run.json", "ledger.json") for what in DAMAGE),
        "run.json-huge-total",
    ],
)
def test_an_unreadable_run_json_or_ledger_is_named_with_exit_2_and_nothing_sent(
    tmp_path: Path,
    mock_server: MockServer,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
) -> None:
    out = tmp_path / "out"
    jobs, _ = _jobs(tmp_path / "jobs.jsonl", 5)
    assert run_cli(mock_server, "openai", jobs, out) == 0
    damaged = out / name
    assert damaged.is_file()
    damaged.write_bytes(content)
    jobs, ids = _jobs(tmp_path / "jobs.jsonl", 10)  # five more jobs to send
    sent = mock_stats(mock_server)["requests"]
    capsys.readouterr()

    for argv in (
        ["run", str(jobs), "--out", str(out), "--base-url", mock_server.base_url("openai")],
        ["status", str(out)],
    ):
        code = main([*argv, "--no-progress"] if argv[0] == "run" else argv)
        err = capsys.readouterr().err
        assert code == 2, (argv[0], err)
        assert "Traceback" not in err
        [line] = err.strip().splitlines()
        assert str(damaged) in line and "cannot be read" in line, line
        assert damaged.read_bytes() == content  # left for the user to fix or delete
    assert mock_stats(mock_server)["requests"] == sent

    damaged.unlink()  # what the message offers
    assert run_cli(mock_server, "openai", jobs, out) == 0
    assert set(read_results(out)) == ids


# 5. An outage against a real socket


@pytest.fixture
def free_port() -> Iterator[int]:
    """A loopback port nobody listens on: connections to it are refused. The socket stays bound
    (SO_REUSEADDR, not listening) so no other test takes the port, yet a server can still bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_a_run_started_while_the_endpoint_is_down_finishes_every_job_once_it_is_up(
    tmp_path: Path, free_port: int
) -> None:
    jobs, ids = _jobs(tmp_path / "jobs.jsonl", 40)
    out = tmp_path / "out"
    log = tmp_path / "stderr.txt"
    url = f"http://127.0.0.1:{free_port}/v1"
    flags = ("--max-concurrency", "4", "--max-attempts", "2")
    started = time.monotonic()
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            run_command(jobs, out, url, *flags),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    server: MockServer | None = None
    try:
        _wait_for("the run to see the outage", lambda: "not answering" in log.read_text())
        # let a few probes fail before the endpoint comes back, about 3 s into the run
        _wait_for("3 s", lambda: time.monotonic() - started >= 3.0 or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        server = MockServer(port=free_port).start()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server is not None:
            server.stop()
    stderr_text = log.read_text()
    assert proc.returncode == 0, stderr_text
    assert "Traceback" not in stderr_text
    results = read_results(out)  # each id exactly once
    assert set(results) == ids
    errored = {k: row["error"] for k, row in results.items() if row["status"] != "ok"}
    assert errored == {}  # the outage burnt no job


def test_an_outage_longer_than_max_outage_ends_with_exit_75_and_one_line(
    tmp_path: Path, free_port: int
) -> None:
    jobs, _ = _jobs(tmp_path / "jobs.jsonl", 10)
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{free_port}/v1"
    started = time.monotonic()
    done = subprocess.run(
        run_command(jobs, out, url, "--max-outage", "3s", "--max-concurrency", "4"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 75, done.stderr
    assert "Traceback" not in done.stderr
    [line] = _lines_with(done.stderr, "unreachable")
    assert url in line, line
    assert took >= 3.0  # it waited out --max-outage (the subprocess timeout bounds the rest)
    # no job spent its attempts on the outage: none is recorded as an error
    assert all(row[1] == "ok" for row in iter_status(out))
