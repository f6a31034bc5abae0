"""Exporting a run's results where they are needed: one Parquet file in object storage, on the
Hub or on a local disk, written once and published whole.

The run directory stays local (its journal needs append and fsync); ``export`` reads its results a
part at a time (memory bounded by a part, whatever the number of rows), writes them as one Parquet
file under a temporary prefix beside the destination, then moves it into place and removes the
prefix. In object storage a move is a copy and an object appears only whole, so a reader sees no
file or the whole of it, never a part written; a failed export leaves nothing at the destination.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from .._core.errors import UsageError
from .._core.stores import filesystem, is_url, shown_url

__all__ = ["Exported", "export"]

log = logging.getLogger("batcher")

TEMPORARY = "_batcher-export-"
"""The start of the temporary prefix's name: a leading ``_`` hides it from dataset readers
(pyarrow, Spark, DuckDB skip such paths), should an export die before removing it."""


@dataclass(frozen=True, slots=True)
class Exported:
    """Where an export went (the URL as shown, without credentials) and how many rows it has."""

    url: str
    rows: int


def export(out: str | os.PathLike[str], url: str) -> Exported:
    """Write every finished job of the run in ``out`` to ``url`` as one Parquet file (``url``
    itself if it ends in ``.parquet``, else ``results.parquet`` under it), published whole.
    Raises ``UsageError`` if ``out`` holds no run, ``OSError`` if the destination cannot be
    written (what was written is removed)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from .._config.schema import OutputSchema
    from .manifest import Manifest
    from .results import iter_tables
    from .rows import result_schema

    path = Path(out)
    manifest = Manifest.read(path)
    if manifest is None:
        raise UsageError(f"{path} holds no run (no run.json): nothing to export")
    if not url.endswith(".parquet"):
        url = url.rstrip("/") + "/results.parquet"
    fs, target = filesystem(url)
    folder, _, name = target.rpartition("/")
    temporary = f"{folder}/{TEMPORARY}{uuid.uuid4().hex}"
    parsed = OutputSchema.from_json(manifest.schema).arrow_type() if manifest.schema else None
    schema = result_schema(parsed)
    rows = 0
    unreadable: list[Path] = []
    if not is_url(url):  # object stores have no folders to make
        fs.create_dir(temporary, recursive=True)
    try:
        with (
            fs.open_output_stream(f"{temporary}/{name}") as sink,
            pq.ParquetWriter(sink, schema, compression="zstd") as writer,
        ):
            for table in iter_tables(path, schema.names, schema=schema, unreadable=unreadable):
                writer.write_table(table)
                rows += table.num_rows
        if unreadable:  # an export is all the results or none of them
            raise UsageError(
                f"cannot read {', '.join(map(str, unreadable))}: rerun the run on {path} to "
                "set it aside (its jobs are sent again), then export"
            )
        fs.move(f"{temporary}/{name}", target)
    finally:
        try:
            if fs.get_file_info(temporary).type != pafs.FileType.NotFound:
                fs.delete_dir(temporary)
        except OSError as e:  # left behind, hidden from readers by its name
            log.warning("could not remove the export's temporary %s: %s", temporary, e)
    return Exported(shown_url(url), rows)
