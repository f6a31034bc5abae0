"""Inputs by URL: Parquet and JSONL in an S3-compatible server on loopback (moto), read through
the code a real bucket is read through (pyarrow's S3 filesystem, ``AWS_ENDPOINT_URL``), a glob
listed once, ids ``URL:ROW``; and no credential in anything batcher writes or prints."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batcher
from batcher import ColumnOptions, InputError
from batcher._core.stores import shown_url
from batcher._jobs import JobSource
from batcher.mock import MockConfig, MockServer, mock_reply
from tests.helpers import kill_once_kept, read_results, run_command
from tests.s3_server import SECRET, S3Server, s3_server

_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as s:
        yield s


@pytest.fixture
def s3(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    return server


def _bucket(s3: S3Server) -> str:
    return s3.bucket(f"jobs-{os.getpid()}-{next(_names)}")


def _parquet(rows: list[dict[str, object]], row_group_size: int = 1000) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=row_group_size)
    return sink.getvalue()


def _jsonl(rows: list[dict[str, object]]) -> bytes:
    import json

    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_glob_of_parquet_files_runs_in_order_with_url_ids(s3: S3Server, tmp_path: Path) -> None:
    bucket = _bucket(s3)
    for name, first in (("b.parquet", 100), ("a.parquet", 0)):
        rows = [{"text": f"doc {i}"} for i in range(first, first + 100)]
        s3.put(bucket, f"in/{name}", _parquet(rows, row_group_size=30))
    s3.put(bucket, "in/deeper/c.parquet", _parquet([{"text": "not matched"}]))
    s3.put(bucket, "in/notes.txt", b"not matched either")
    summary = batcher.run_sync(
        f"s3://{bucket}/in/*.parquet",
        tmp_path / "out",
        mock="instant",
        model="m",
        prompt_column="text",
    )
    assert (summary.total, summary.ok) == (200, 200)
    results = read_results(tmp_path / "out")
    url = f"s3://{bucket}/in/a.parquet"
    assert f"{url}:1" in results and f"s3://{bucket}/in/b.parquet:100" in results
    assert results[f"{url}:7"]["source"] == f"{url} row 7"
    manifest = batcher._rundir.manifest.Manifest.read(tmp_path / "out")
    assert manifest is not None
    assert manifest.inputs == (url, f"s3://{bucket}/in/b.parquet")


def test_double_star_reaches_into_folders(s3: S3Server) -> None:
    bucket = _bucket(s3)
    s3.put(bucket, "p/x/1.jsonl", _jsonl([{"prompt": "one"}]))
    s3.put(bucket, "p/x/y/2.jsonl.gz", gzip.compress(_jsonl([{"prompt": "two"}] * 3)))
    source = JobSource(f"s3://{bucket}/p/**.jsonl*", default_model="m")
    assert source.scan() == 4
    assert [j.id for j in source][:2] == [
        f"s3://{bucket}/p/x/1.jsonl:1",
        f"s3://{bucket}/p/x/y/2.jsonl.gz:1",
    ]


def test_jsonl_is_streamed_in_pieces(s3: S3Server) -> None:
    """Lines cross the reader's chunks: each one still comes out whole."""
    from batcher._jobs._remote import _lines

    data = _jsonl([{"prompt": "x" * (i % 50)} for i in range(300)])
    stream = pa.BufferReader(data)
    assert list(_lines(stream, size=7)) == data.rstrip(b"\n").split(b"\n")


def test_urls_that_name_nothing_are_named_before_anything_runs(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = _bucket(s3)
    s3.put(bucket, "in/a.parquet", _parquet([{"text": "x"}]))
    with pytest.raises(InputError) as e:
        batcher.run_sync(
            [
                f"s3://{bucket}/in/missing.parquet",
                f"s3://{bucket}/none/*.parquet",
                f"s3://{bucket}/in/",
            ],
            tmp_path / "out",
            mock="instant",
            model="m",
        )
    messages = [p.message for p in e.value.problems]
    assert messages[:2] == ["no such file", "no file matches"]
    assert messages[2] == f"a folder: name its files with a glob, e.g. s3://{bucket}/in/*.parquet"
    assert not (tmp_path / "out").exists()


def test_a_remote_file_missing_a_column_is_one_problem(s3: S3Server) -> None:
    bucket = _bucket(s3)
    s3.put(bucket, "a.parquet", _parquet([{"text": "x"}] * 10))
    with pytest.raises(InputError, match=r"no column\(s\) \['body'\]") as e:
        JobSource(f"s3://{bucket}/a.parquet", ColumnOptions(prompt_column="body")).scan()
    assert len(e.value.problems) == 1


def test_a_url_is_shown_without_its_credentials() -> None:
    url = "https://user:pa55@example.com/data/x.parquet?X-Amz-Signature=abc#frag"
    assert shown_url(url) == "https://example.com/data/x.parquet"
    # a store's key keeps its ? and # (a glob's, or the name's own)
    assert shown_url("s3://AKIA:secret@bkt/in/f?.parquet") == "s3://bkt/in/f?.parquet"


def test_the_secret_never_reaches_output_or_the_run_directory(
    server: S3Server, tmp_path: Path
) -> None:
    """A real ``batcher run`` of an s3:// glob, and one of a URL that names nothing: the secret
    key it is reached with is in neither's stdout, stderr nor any file of the run directory."""
    bucket = _bucket(server)
    server.put(bucket, "in/a.parquet", _parquet([{"text": f"t{i}"} for i in range(50)]))
    out = tmp_path / "out"
    env = {**os.environ, **server.env, "ARROW_S3_LOG_LEVEL": "debug"}
    seen = []
    flags = ["--mock", "instant", "--model", "m", "--prompt-column", "text", "--no-progress"]
    for url, code in ((f"s3://{bucket}/in/*.parquet", 0), (f"s3://{bucket}/nope.parquet", 2)):
        done = subprocess.run(
            [sys.executable, "-m", "batcher", "run", url, "--out", str(out), *flags],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == code, done.stderr.decode()
        seen += [done.stdout, done.stderr]
    assert b"50 jobs: 50 ok" in seen[0]
    assert b"no such file" in seen[3]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for blob in [*seen, *(p.read_bytes() for p in files)]:
        assert SECRET.encode() not in blob


def _run(url: str, out: Path, n_check: int | None = None) -> batcher.RunSummary:
    return batcher.run_sync(url, out, mock="instant", model="m", prompt_column="text")


def test_export_publishes_the_results_whole(s3: S3Server, tmp_path: Path) -> None:
    bucket = _bucket(s3)
    s3.put(bucket, "in/a.parquet", _parquet([{"text": f"t{i}"} for i in range(300)]))
    out = tmp_path / "out"
    _run(f"s3://{bucket}/in/a.parquet", out)
    done = batcher.export(out, f"s3://{bucket}/results/")
    assert done == batcher.Exported(f"s3://{bucket}/results/results.parquet", 300)
    # no temporary left; the empty "results/" is pyarrow's marker of a folder it deleted from
    assert [k for k in s3.keys(bucket, "results") if not k.endswith("/")] == [
        "results/results.parquet"
    ]
    table = pq.read_table(io.BytesIO(s3.get(bucket, "results/results.parquet")))
    assert table.sort_by("id").equals(batcher.results_table(out).sort_by("id"))


def test_a_failed_export_leaves_nothing_at_the_destination(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batcher._rundir import results

    bucket = _bucket(s3)
    s3.put(bucket, "in/a.parquet", _parquet([{"text": f"t{i}"} for i in range(10)]))
    out = tmp_path / "out"
    _run(f"s3://{bucket}/in/a.parquet", out)
    real = results.iter_tables

    def failing(*args: object, **kwargs: object) -> Iterator[pa.Table]:
        yield from real(*args, **kwargs)  # type: ignore[arg-type]
        raise OSError("the network went away")

    monkeypatch.setattr(results, "iter_tables", failing)
    with pytest.raises(OSError, match="went away"):
        batcher.export(out, f"s3://{bucket}/exported.parquet")
    assert s3.keys(bucket, "exported") == []
    assert [k for k in s3.keys(bucket) if "_batcher-export-" in k] == []


def test_run_then_export_from_the_command_line(
    s3: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batcher._cli.main import main

    bucket = _bucket(s3)
    s3.put(bucket, "in/a.jsonl", _jsonl([{"prompt": f"p{i}"} for i in range(20)]))
    out, url = tmp_path / "out", f"s3://{bucket}/out/run1.parquet"
    flags = ["--mock", "instant", "--model", "m", "--no-progress", "--export", url]
    assert main(["run", f"s3://{bucket}/in/a.jsonl", "--out", str(out), *flags]) == 0
    assert pq.read_table(io.BytesIO(s3.get(bucket, "out/run1.parquet"))).num_rows == 20
    assert main(["export", str(out), str(tmp_path / "local")]) == 0
    assert pq.read_table(tmp_path / "local" / "results.parquet").num_rows == 20
    capsys.readouterr()
    assert main(["export", str(out), f"s3://no-such-bucket-{os.getpid()}/x.parquet"]) == 74
    err = capsys.readouterr().err
    assert f"cannot export to s3://no-such-bucket-{os.getpid()}/x.parquet" in err
    assert "temporary" not in err  # nothing was left to remove


def test_a_run_from_the_bucket_resumes_after_a_kill_and_exports(
    server: S3Server, tmp_path: Path, start_mock: Callable[[MockConfig], MockServer]
) -> None:
    """SIGKILL mid-run, then the same command: every job of the bucket's file once, and the
    results exported back to the bucket."""
    mock = start_mock(MockConfig(latency_ms=(10.0, 30.0)))
    bucket = _bucket(server)
    prompts = [f"resume prompt {i}" for i in range(1000)]
    url = server.put(bucket, "in/jobs.parquet", _parquet([{"text": p} for p in prompts], 128))
    out = tmp_path / "out"
    command = run_command(url, out, mock.base_url("openai"), "--model", "m")
    command += ["--prompt-column", "text", "--max-concurrency", "8"]
    env = {**os.environ, **server.env, "OPENAI_API_KEY": "sk-test"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert kill_once_kept(proc, out, 200)
    done = subprocess.run(
        [*command, "--export", f"s3://{bucket}/out/"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"Exported 1000 results to s3://{bucket}/out/results.parquet" in done.stdout
    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {f"{url}:{i}" for i in range(1, 1001)}
    assert results[f"{url}:5"]["text"] == mock_reply("m", prompts[4])
    exported = pq.read_table(io.BytesIO(server.get(bucket, "out/results.parquet")))
    assert sorted(exported.column("id").to_pylist()) == sorted(results)


def test_remote_footers_are_checked_before_any_data_is_read(s3: S3Server) -> None:
    """A file of the glob without the column is named at once, from its footer: the rows of the
    files before it (one of them bad) are not read for it."""
    bucket = _bucket(s3)
    s3.put(bucket, "in/1.parquet", _parquet([{"text": "fine"}, {"text": None}]))
    s3.put(bucket, "in/2.parquet", _parquet([{"body": "no text column"}]))
    s3.put(bucket, "in/3.parquet", b"not parquet at all")
    with pytest.raises(InputError) as e:
        JobSource(f"s3://{bucket}/in/*.parquet", ColumnOptions(prompt_column="text")).scan()
    where = [p.where for p in e.value.problems]
    assert where == [f"s3://{bucket}/in/2.parquet", f"s3://{bucket}/in/3.parquet"]
    assert "no column(s) ['text']" in e.value.problems[0].message
    assert "cannot read Parquet file" in e.value.problems[1].message


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_an_image_in_the_bucket_is_read_when_its_job_is_sent(
    s3: S3Server, tmp_path: Path, provider: str
) -> None:
    import hashlib

    from batcher.mock._media import make_png
    from tests.helpers import write_jsonl

    png = make_png("bucket", 40, 30)
    bucket = _bucket(s3)
    ref = s3.put(bucket, "pics/a.png", png)
    rows = [
        {"id": "ok", "prompt": "look", "images": [ref]},
        {"id": "gone", "prompt": "look", "images": [f"s3://{bucket}/pics/missing.png"]},
    ]
    local = write_jsonl(tmp_path / "jobs.jsonl", rows)
    # a job file in the bucket: its relative ref is a URL beside it
    relative = [{"id": "rel", "prompt": "look", "images": ["pics/a.png"]}]
    remote = s3.put(bucket, "jobs.jsonl", _jsonl(relative))
    summary = batcher.run_sync(
        [str(local), remote], tmp_path / "out", mock="instant", model="m", provider=provider
    )
    assert (summary.ok, summary.errors) == (2, 1)  # the missing one is found only when sent
    results = read_results(tmp_path / "out")
    digest = hashlib.sha256(png).hexdigest()[:12]
    for job in ("ok", "rel"):
        assert results[job]["text"].endswith(f"look [image/png 40x30 sha256:{digest}]")
    assert "missing.png" in results["gone"]["error"]


def test_a_single_character_glob_names_the_files_by_their_urls(s3: S3Server) -> None:
    bucket = _bucket(s3)
    for name in ("f1", "f2", "f10"):
        s3.put(bucket, f"in/{name}.jsonl", _jsonl([{"prompt": name}]))
    source = JobSource(f"s3://{bucket}/in/f?.jsonl", default_model="m")
    assert source.inputs == (f"s3://{bucket}/in/f1.jsonl", f"s3://{bucket}/in/f2.jsonl")
