"""An https:// (here http://, on loopback) job file: one Parquet or JSONL file read through fsspec's
HTTP filesystem by range requests, as a real web server serves it."""

from __future__ import annotations

import gzip
import io
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batcher
from batcher import InputError
from tests.helpers import read_results

pytest.importorskip("fsspec")


class _Files(BaseHTTPRequestHandler):
    """Serves ``files`` with HEAD and ranged GETs (a 206 for ``Range: bytes=A-B``)."""

    files: ClassVar[dict[str, bytes]] = {}
    ranges: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes | None:
        body = self.files.get(self.path.partition("?")[0])
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return body

    def do_HEAD(self) -> None:
        body = self._body()
        if body is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self) -> None:
        body = self._body()
        if body is None:
            return
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if asked:
            self.ranges.append(asked[0])
            start, end = int(asked[1]), int(asked[2] or len(body) - 1)
            part = body[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(body)}")
        else:
            part = body
            self.send_response(200)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)


@pytest.fixture
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Files.files, _Files.ranges = {}, []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_parquet_file_by_url_is_read_by_ranges(web: str, tmp_path: Path) -> None:
    sink = io.BytesIO()
    rows = [{"text": f"web doc {i}", "pad": "x" * 2000} for i in range(3000)]
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=500)
    _Files.files["/data/docs.parquet"] = sink.getvalue()
    url = f"{web}/data/docs.parquet"
    summary = batcher.run_sync(
        f"{url}?token=sekrit", tmp_path / "out", mock="instant", model="m", prompt_column="text"
    )
    assert summary.ok == 3000
    results = read_results(tmp_path / "out")
    assert f"{url}:3000" in results  # the id is the URL's without its query
    assert all("sekrit" not in r["source"] for r in results.values())
    assert _Files.ranges  # read by range, not downloaded whole


def test_a_gzipped_jsonl_by_url(web: str, tmp_path: Path) -> None:
    lines = "".join(f'{{"prompt": "p{i}"}}\n' for i in range(10)).encode()
    _Files.files["/j.jsonl.gz"] = gzip.compress(lines)
    summary = batcher.run_sync(f"{web}/j.jsonl.gz", tmp_path / "out", mock="instant", model="m")
    assert summary.ok == 10
    assert f"{web}/j.jsonl.gz:10" in read_results(tmp_path / "out")


def test_a_missing_url_is_named(web: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        batcher.run_sync(f"{web}/none.parquet", tmp_path / "out", mock="instant", model="m")
