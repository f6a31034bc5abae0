"""Input files read as a stream of rows: JSONL, gzipped JSONL and Parquet, one row at a time, from
local files, object storage (``RemoteFile``) or tables and data frames (``FrameInput``).

A row is one JSON line or one Parquet row, not yet a job. A row that cannot be read (bad JSON, a
missing Parquet column, a truncated file) is yielded as a ``BadRow`` in its place, so the scan can
name every problem instead of stopping at the first.
"""

from __future__ import annotations

import codecs
import gzip
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from .._core.codec import loads
from .._core.errors import InputError, InputProblem
from ._frames import FrameInput
from ._remote import RemoteFile

__all__ = ["BadRow", "Row", "Rows", "check_footers", "check_paths", "frame_rows", "iter_rows"]

_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")

Row: TypeAlias = Mapping[str, Any]
"""One input row: a JSON object, a Parquet row or a Python mapping, keyed by column."""


class BadRow(Exception):
    """A problem with one input row; the scan turns it into an ``InputProblem``."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id


Rows: TypeAlias = Iterator[tuple[str, str, Row | BadRow]]
"""(where, position id, row or its problem) for each line or row, in file order."""


def check_paths(paths: Sequence[Path | RemoteFile]) -> None:
    """Fail early, before anything is read, on files that are missing or of a kind we don't read
    (a remote file was found by listing its store: it is there)."""
    problems = []
    for p in paths:
        if not p.name.endswith(_SUFFIXES):
            problems.append(
                InputProblem(str(p), "unsupported file type; use .jsonl, .jsonl.gz or .parquet")
            )
        elif isinstance(p, Path) and not p.is_file():
            problems.append(InputProblem(str(p), "no such file"))
    if problems:
        raise InputError(problems)


_SHAPE_COLUMNS = frozenset({"prompt", "messages", "custom_id", "body", "request"})
"""The columns of the four line shapes: a Parquet file without any of them has no prompt."""


def iter_rows(
    paths: Sequence[Path | RemoteFile], columns: tuple[str, ...], *, shaped: bool = True
) -> Rows:
    """Every line or row of every file, streaming; each Parquet file must have ``columns``, and,
    if ``shaped`` (no column mapping gives the prompt), a column of one of the four shapes."""
    for path in paths:
        if path.name.endswith(".parquet"):
            yield from _parquet_rows(path, columns, shaped)
        else:
            yield from _jsonl_rows(path)


def _jsonl_rows(path: Path | RemoteFile) -> Rows:
    # a remote file's id is its URL's: two files of one name in different folders of a bucket
    # are different files
    label = path.name if isinstance(path, Path) else str(path)
    try:
        with _open_lines(path) as f:
            for n, raw in enumerate(f, start=1):
                where, pos = f"{path}:{n}", f"{label}:{n}"
                if n == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]  # a byte order mark, as Windows writes
                if not raw.strip():
                    continue
                try:
                    row = loads(raw)
                except ValueError as e:
                    yield where, pos, BadRow(f"not valid JSON ({e})")
                    continue
                if not isinstance(row, dict):
                    yield where, pos, BadRow(f"expected a JSON object, got {type(row).__name__}")
                    continue
                yield where, pos, row
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        yield str(path), label, BadRow(f"cannot read file: {e}")


def _open_lines(path: Path | RemoteFile) -> Any:
    """The file's lines, as bytes, gunzipped if its name ends in .gz."""
    if isinstance(path, RemoteFile):
        return path.open_lines()
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _column_problem(names: set[str], columns: tuple[str, ...], shaped: bool) -> str | None:
    """Why a table with columns ``names`` cannot give jobs: it lacks one of ``columns``, or (if
    ``shaped``) has no column of the four shapes. One problem for the file, not one a row."""
    missing = [c for c in columns if c not in names]
    if missing:
        return f"no column(s) {missing}; the file has {sorted(names)}"
    if shaped and not names & _SHAPE_COLUMNS:
        return (
            f"no prompt column; the file has {sorted(names)}: name the prompt's column with "
            "--prompt-column COL or build it with --prompt-template 'Summarize: {COL}'"
        )
    return None


def check_footers(files: Sequence[RemoteFile], columns: tuple[str, ...], *, shaped: bool) -> int:
    """Read only the footers of remote Parquet files, before any of their data: raise
    ``InputError`` naming every file that cannot be read or lacks a column (the scan would find
    it only once it had downloaded every file before it), else return how many rows they hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems, rows = [], 0
    for f in files:
        try:
            with f.open_random() as source:
                meta = pq.read_metadata(source)
        except (OSError, pa.ArrowException) as e:
            problems.append(InputProblem(str(f), f"cannot read Parquet file: {e}"))
            continue
        problem = _column_problem(set(meta.schema.to_arrow_schema().names), columns, shaped)
        if problem is not None:
            problems.append(InputProblem(str(f), problem))
        rows += meta.num_rows
    if problems:
        raise InputError(problems)
    return rows


def _parquet_rows(path: Path | RemoteFile, columns: tuple[str, ...], shaped: bool) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = path.name if isinstance(path, Path) else str(path)
    try:
        # a remote file is read by ranges: its footer, then one row group at a time
        pf = pq.ParquetFile(path.open_random() if isinstance(path, RemoteFile) else path)
    except (OSError, pa.ArrowException) as e:
        yield str(path), label, BadRow(f"cannot read Parquet file: {e}")
        return
    problem = _column_problem(set(pf.schema_arrow.names), columns, shaped)
    if problem is not None:
        yield str(path), label, BadRow(problem)
        return
    n = 0
    try:
        with pf:
            for batch in pf.iter_batches(batch_size=2048, use_threads=False):
                for row in batch.to_pylist():
                    n += 1
                    yield f"{path} row {n}", f"{label}:{n}", row
    except (OSError, pa.ArrowException) as e:
        yield (
            f"{path} row {n + 1}",
            f"{label}:{n + 1}",
            BadRow(f"cannot read Parquet data: {e}"),
        )


def frame_rows(frame: FrameInput, columns: tuple[str, ...], *, shaped: bool = True) -> Rows:
    """Every row of a table or data frame, a record batch at a time, as a Parquet file's are: it
    must have ``columns`` (and, if ``shaped``, a column of the four shapes). Rows are placed as
    a list of Python jobs is (``jobs[N]``, ids ``job-N+1``)."""
    problem = _column_problem(set(frame.names), columns, shaped)
    if problem is not None:
        yield frame.kind, "job-1", BadRow(problem.replace("the file has", "the data has"))
        return
    n = 0
    for batch in frame.batches():
        for row in batch.to_pylist():
            n += 1
            yield f"jobs[{n - 1}]", f"job-{n}", row
