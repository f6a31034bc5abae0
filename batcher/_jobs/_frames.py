"""Data frames and Arrow tables as jobs: a ``pyarrow.Table`` or ``RecordBatchReader``, a pandas or
polars ``DataFrame``, or a Hugging Face ``datasets.Dataset``, read a record batch at a time.

Each is turned into Arrow columns without importing its library (it is imported by the caller who
made the object): pandas and polars frames give theirs through ``pyarrow``, a ``Dataset`` is
iterated in Arrow batches (its own memory-mapped files, honouring a selection or shuffle). A
``RecordBatchReader`` can be read only once while the jobs are read twice (checked, then sent), so
it is read into a table first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["FrameInput", "as_frame"]

_BATCH = 2048
"""Rows converted to Python at a time: as for a Parquet file's record batches."""


@dataclass(frozen=True, slots=True)
class FrameInput:
    """A table-like input: its column names, and a way to read its rows again in batches."""

    kind: str
    """What it was, for messages: ``pyarrow.Table``, ``pandas.DataFrame``..."""
    names: tuple[str, ...]
    batches: Callable[[], Iterator[Any]]
    """A new iterator of Arrow record batches (or tables) each time it is called."""


def as_frame(obj: Any) -> FrameInput | None:
    """``obj`` as a ``FrameInput`` if it is a table, data frame or dataset batcher reads, else
    None (the caller treats it as an iterable of jobs or paths)."""
    import pyarrow as pa

    cls = type(obj)
    library, name = cls.__module__.split(".")[0], cls.__name__
    if isinstance(obj, pa.RecordBatchReader):
        obj = obj.read_all()
        library, name = "pyarrow", "RecordBatchReader"
    if isinstance(obj, pa.RecordBatch):
        obj = pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        return _table_input(f"{library}.{name}", obj)
    if library == "pandas" and name == "DataFrame":
        # the index is not a column of the jobs: a default RangeIndex would only add one
        return _table_input("pandas.DataFrame", pa.Table.from_pandas(obj, preserve_index=False))
    if library == "polars" and name == "DataFrame":
        return _table_input("polars.DataFrame", obj.to_arrow())
    if library == "datasets" and name == "Dataset":
        arrow = obj.with_format("arrow")
        return FrameInput(
            "datasets.Dataset",
            tuple(obj.column_names),
            lambda: iter(arrow.iter(batch_size=_BATCH)),
        )
    return None


def _table_input(kind: str, table: Any) -> FrameInput:
    return FrameInput(
        kind, tuple(table.column_names), lambda: iter(table.to_batches(max_chunksize=_BATCH))
    )
