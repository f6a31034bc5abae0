"""Helpers shared by the tests: job files, results, the mock's counters."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from batcher._rundir.rows import Record
from batcher.mock import MockServer


def mock_stats(server: MockServer) -> dict[str, Any]:
    """What the mock server says it saw."""
    stats: dict[str, Any] = httpx.get(f"{server.url}/admin/stats").json()
    return stats


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=64)
    return path


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    """Results by id; fails if any id appears twice."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "results").to_pylist()
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "an id appears more than once in the results"
    return by_id


def run_cli(
    server: MockServer, provider: str, jobs: Path | str, out: Path | str, *flags: str
) -> int:
    """``batcher run`` in-process against ``server``, as a user would type it."""
    from batcher._cli.main import main

    return main(
        [
            "run",
            str(jobs),
            "--out",
            str(out),
            "--provider",
            provider,
            "--base-url",
            server.base_url(provider),
            "--no-progress",
            *flags,
        ]
    )


def make_record(i: int, status: str = "ok") -> Record:
    """A finished job for store tests: id ``j{i}``, ok unless ``status`` says otherwise."""
    return Record(
        id=f"j{i}",
        status=status,
        text=f"t{i}" if status == "ok" else None,
        input_tokens=i,
        output_tokens=1,
        attempts=1,
        error=None if status == "ok" else "boom",
        error_kind=None if status == "ok" else "permanent",
        model="m",
        finish_reason="stop",
        latency_ms=1.0,
        response="{}",
        source=f"f:{i}",
    )


def run_command(jobs: Path | str, out: Path, base_url: str, *flags: str) -> list[str]:
    """``batcher run`` as a subprocess would be started by a user, against ``base_url``."""
    return [
        sys.executable,
        "-m",
        "batcher",
        "run",
        str(jobs),
        "--out",
        str(out),
        "--base-url",
        base_url,
        "--no-progress",
        *flags,
    ]


_KILL_AT_STEP = """
import os, signal, sys
from batcher._engine import batchapi as _batchapi
from batcher._cli.main import main

step = sys.argv[1]
made = _batchapi.BatchExecutor.__init__

def init(self, *args, **kwargs):
    made(self, *args, **kwargs)
    def kill(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    self.step = kill

_batchapi.BatchExecutor.__init__ = init
sys.exit(main(sys.argv[2:]))
"""


def killed_at_step(command: list[str], step: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` (a ``run_command``) in a process that kills itself with SIGKILL once its
    batch executor reaches ``step`` (``BatchExecutor.step``: created, collecting...)."""
    argv = [command[0], "-c", _KILL_AT_STEP, step, *command[3:]]
    return subprocess.run(argv, capture_output=True, timeout=100, check=False)


def kept_ids(out: Path) -> set[str]:
    """The ids a run directory has kept (parts and journal), read as ``batcher status`` reads
    them, safely beside a run that is writing."""
    from batcher._rundir.results import iter_status

    return {row[0] for row in iter_status(out)} if out.exists() else set()


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``ready`` until it holds; fail naming ``what`` after ``timeout`` seconds (a bound
    on a hang, never the thing a test measures)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill_once_kept(proc: subprocess.Popen[Any], out: Path, at_least: int) -> bool:
    """SIGKILL ``proc`` once ``out`` has kept ``at_least`` jobs: a moment in the middle of its
    work that does not depend on how fast the machine is. False if it ended first."""

    def reached() -> bool:
        return proc.poll() is not None or len(kept_ids(out)) >= at_least

    wait_for(f"the run to keep {at_least} jobs", reached)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return killed
