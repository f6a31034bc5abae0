"""Input files read as a stream of rows: JSONL, gzipped JSONL and Parquet, one row at a time.

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

__all__ = ["BadRow", "Row", "Rows", "check_paths", "iter_rows"]

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


def check_paths(paths: Sequence[Path]) -> None:
    """Fail early, before anything is read, on files that are missing or of a kind we don't read."""
    problems = []
    for p in paths:
        if not p.name.endswith(_SUFFIXES):
            problems.append(
                InputProblem(str(p), "unsupported file type; use .jsonl, .jsonl.gz or .parquet")
            )
        elif not p.is_file():
            problems.append(InputProblem(str(p), "no such file"))
    if problems:
        raise InputError(problems)


_SHAPE_COLUMNS = frozenset({"prompt", "messages", "custom_id", "body", "request"})
"""The columns of the four line shapes: a Parquet file without any of them has no prompt."""


def iter_rows(paths: Sequence[Path], columns: tuple[str, ...], *, shaped: bool = True) -> Rows:
    """Every line or row of every file, streaming; each Parquet file must have ``columns``, and,
    if ``shaped`` (no column mapping gives the prompt), a column of one of the four shapes."""
    for path in paths:
        if path.name.endswith(".parquet"):
            yield from _parquet_rows(path, columns, shaped)
        else:
            yield from _jsonl_rows(path)


def _jsonl_rows(path: Path) -> Rows:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                where, pos = f"{path}:{n}", f"{path.name}:{n}"
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
        yield str(path), path.name, BadRow(f"cannot read file: {e}")


def _parquet_rows(path: Path, columns: tuple[str, ...], shaped: bool) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        yield str(path), path.name, BadRow(f"cannot read Parquet file: {e}")
        return
    names = set(pf.schema_arrow.names)
    missing = [c for c in columns if c not in names]
    if missing:
        yield str(path), path.name, BadRow(f"no column(s) {missing}; the file has {sorted(names)}")
        return
    if shaped and not names & _SHAPE_COLUMNS:
        # one problem for the file, not the same one for every row
        yield (
            str(path),
            path.name,
            BadRow(
                f"no prompt column; the file has {sorted(names)}: name the prompt's column with "
                "--prompt-column COL or build it with --prompt-template 'Summarize: {COL}'"
            ),
        )
        return
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=2048, use_threads=False):
            for row in batch.to_pylist():
                n += 1
                yield f"{path} row {n}", f"{path.name}:{n}", row
    except (OSError, pa.ArrowException) as e:
        yield (
            f"{path} row {n + 1}",
            f"{path.name}:{n + 1}",
            BadRow(f"cannot read Parquet data: {e}"),
        )
