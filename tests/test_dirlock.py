"""One run per output directory: the lock conflicts, names its holder, and dies with its process."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batcher._core.errors import DirectoryLocked, UsageError, WriteFailed
from batcher._rundir.dirlock import DirLock, holder


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_second_lock_in_the_same_process_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = DirLock(out)
    first.acquire()
    before = _snapshot(out)
    with pytest.raises(DirectoryLocked) as caught:
        DirLock(out).acquire()
    assert caught.value.pid == os.getpid()
    assert f"{out} is in use by another batcher run (pid {os.getpid()}, since " in str(caught.value)
    assert _snapshot(out) == before
    first.release()
    with DirLock(out) as second:
        assert second.held
    assert not second.held


def test_holder_says_who_holds_the_lock_and_only_while_it_is_held(tmp_path: Path) -> None:
    assert holder(tmp_path) is None  # no lock file yet
    assert holder(tmp_path / "missing") is None
    start = time.time()
    with DirLock(tmp_path):
        who = holder(tmp_path)
        assert who is not None and who.pid == os.getpid()
        assert who.since is not None and start - 1 <= who.since <= time.time()
    assert (tmp_path / ".lock").exists()  # left behind on purpose, and meaningless
    assert holder(tmp_path) is None


def test_a_missing_directory_is_created_and_a_file_is_refused(tmp_path: Path) -> None:
    with DirLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / ".lock").is_file()
    plain = tmp_path / "results.txt"
    plain.write_text("mine")
    with pytest.raises(UsageError, match=f"{plain} is a file, not a directory"):
        DirLock(plain).acquire()
    assert plain.read_text() == "mine"


def test_a_status_probe_does_not_turn_a_starting_run_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``holder`` holds a shared lock for an instant; ``acquire`` tries again through it."""
    with DirLock(tmp_path):
        pass  # a run came and went: the lock file exists, and nobody holds it
    probe = os.open(tmp_path / ".lock", os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    sleeps: list[float] = []

    def probe_ends(seconds: float) -> None:
        if not sleeps:
            os.close(probe)
        sleeps.append(seconds)

    monkeypatch.setattr(time, "sleep", probe_ends)  # the module _dirlock sleeps through
    with DirLock(tmp_path):
        assert len(sleeps) == 1


HOLD = """
import sys, time
from pathlib import Path
from batcher._rundir.dirlock import DirLock
DirLock(Path(sys.argv[1])).acquire()
time.sleep(60)
"""


def test_a_lock_held_by_another_process_dies_with_it(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)])
    try:
        deadline = time.monotonic() + 20
        while (who := holder(tmp_path)) is None or who.pid != child.pid:
            assert child.poll() is None, "the child exited before taking the lock"
            assert time.monotonic() < deadline, "the child never took the lock"
            time.sleep(0.02)
        with pytest.raises(DirectoryLocked, match=f"pid {child.pid}, since "):
            DirLock(tmp_path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert holder(tmp_path) is None
    with DirLock(tmp_path):
        who = holder(tmp_path)
        assert who is not None and who.pid == os.getpid()


def test_a_file_system_without_locks_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(UsageError, match=r"cannot lock .*: No locks available; use an --out on"):
        DirLock(tmp_path).acquire()


def test_a_holder_that_cannot_write_its_name_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(WriteFailed) as caught:
        DirLock(tmp_path).acquire()
    assert caught.value.path == tmp_path / ".lock"
    monkeypatch.undo()
    assert holder(tmp_path) is None
    with DirLock(tmp_path):
        pass
