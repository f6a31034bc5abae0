"""What the library gives of a finished (or live) run: ``batcher.results(DIR)``, each ok job's
answer (typed with the run's schema) or row, and ``batcher.results_table(DIR)``, every row as one
Arrow table; both read beside a live run as ``batcher status`` does (``results``' readers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from .results import _stream_dirs, iter_rows, iter_tables

M = TypeVar("M")

__all__ = ["results", "results_table", "stored_schema"]


@overload
def results(out: str | os.PathLike[str], *, schema: type[M]) -> Iterator[tuple[str, M]]: ...
@overload
def results(
    out: str | os.PathLike[str], *, schema: Mapping[str, Any] | str | None = None
) -> Iterator[tuple[str, Any]]: ...
def results(out: str | os.PathLike[str], *, schema: Any = None) -> Iterator[tuple[str, Any]]:
    """``(job id, answer)`` of every job that ended ok (beside a live run too). For a run with
    ``--schema``, the answer is read from its ``parsed`` column: instances of ``schema`` if it is
    a pydantic model, else the answers as JSON data. ``schema`` must store as the run's own
    schema does (the one ``run.json`` records); without it, that one is used. For a run without
    one, the answer is the job's row as a dict (``text``, tokens, ``cost_usd``, ``embedding``...:
    the columns of ``results_table``). Raises ``UsageError`` for a directory with no run, or a
    ``schema`` given for a run without one; ``SchemaError`` for a schema that does not fit."""
    from .._config.schema import OutputSchema, load_schema
    from .._core.errors import SchemaError, UsageError
    from .manifest import Manifest

    path = Path(out)
    manifest = Manifest.read(path)
    if manifest is None:
        raise UsageError(f"{path} holds no run (no run.json)")
    if manifest.schema is None:
        if schema is not None:
            raise UsageError(
                f"{path} holds no run with a --schema: it has no parsed answers to read as "
                "schema= (leave it out for the rows)"
            )
        names = list(stored_schema(path, None).names)
        for row in iter_rows(path, names):
            if row["status"] == "ok":
                yield row["id"], row
        return
    recorded = OutputSchema.from_json(manifest.schema)
    wanted = load_schema(schema) if schema is not None else recorded
    if wanted.arrow_type() != recorded.arrow_type():
        raise SchemaError(
            wanted.source,
            "",
            f"does not store as the schema {path} was run with "
            f"({recorded.source}): read it with that one",
        )
    reader = OutputSchema(recorded.json_schema, source=recorded.source, name=recorded.name,
                          model=wanted.model)  # fmt: skip
    for row in iter_rows(path, ["id", "status", "parsed"]):
        if row["status"] == "ok" and row["parsed"] is not None:
            yield row["id"], reader.instance(row["parsed"])


def stored_schema(path: Path, parsed: Any) -> Any:
    """The results' Arrow schema of the run in ``path``: with ``parsed`` (the Arrow type of its
    schema's answers) and, for a run of embeddings, the ``embedding`` column of the length its
    first readable part holds, else its journal's first vector."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .rows import result_schema

    parts_dir = _stream_dirs(path, "results")[0]
    for part in sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else ():
        try:
            field = pq.read_schema(part).field("embedding")
        except KeyError:
            return result_schema(parsed)
        except (pa.ArrowInvalid, OSError):
            continue
        return result_schema(parsed, int(field.type.list_size))
    for row in iter_rows(path, ["embedding"]):
        if row.get("embedding") is not None:
            return result_schema(parsed, len(row["embedding"]))
    return result_schema(parsed)


def results_table(out: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> Any:
    """Every finished job of the run in ``out`` as one ``pyarrow.Table``, its columns those of
    ``results/`` (``columns`` picks some): for ``.to_pandas()``, ``polars.from_arrow`` or a
    query. Parts and the journal alike, read beside a live run as ``batcher status`` reads (a
    part that cannot be read is left out). Raises ``UsageError`` if ``out`` holds no run or a
    column is not one of the results'."""
    import pyarrow as pa

    from .._config.schema import OutputSchema
    from .._core.errors import UsageError
    from .manifest import Manifest

    path = Path(out)
    manifest = Manifest.read(path)
    if manifest is None:
        raise UsageError(f"{path} holds no run (no run.json)")
    parsed = OutputSchema.from_json(manifest.schema).arrow_type() if manifest.schema else None
    schema = stored_schema(path, parsed)
    names = list(columns) if columns is not None else schema.names
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise UsageError(f"no column(s) {unknown} in the results; they have {schema.names}")
    wanted = pa.schema([schema.field(c) for c in names])
    tables = list(iter_tables(path, names, schema=schema))
    return pa.concat_tables(tables) if tables else wanted.empty_table()
