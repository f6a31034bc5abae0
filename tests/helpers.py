"""Helpers shared by the tests: job files, results, the mock's counters."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx

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
