"""Helpers shared by the tests: job files, results, the mock's counters."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from batcher._store import Record
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
    from batcher._cli import main

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


def run_command(jobs: Path, out: Path, base_url: str, *flags: str) -> list[str]:
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
