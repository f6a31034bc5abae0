"""The results store (``ResultStore``): a run's results journaled and compacted into Parquet parts
(``journal.JournalStore``, whose module describes the layout), with what is results' own: the
``embedding`` column's one vector length per directory, the finished jobs read back, and rows
removed to send their jobs again.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._core.codec import dumps
from .._core.errors import UsageError
from .._core.idset import IdMap, id_hash
from .durable import fsync_dir, writing
from .journal import _SEG, PART, JournalStore, read_segment
from .rows import Record, result_schema

__all__ = ["ResultStore"]


class ResultStore(JournalStore):
    """Durable results for one output directory: ``journal/`` compacted into ``results/``.

    A run of embeddings has an ``embedding`` column of one vector length in every part (a
    directory's parts share one schema): ``--dimensions``, else what the parts already written
    hold, else the first vector answered fixes it. Until it is fixed (every row so far an error)
    the rows stay in the journal, which every reader reads too; a vector of another length is
    recorded as an error (``fit``)."""

    def __init__(
        self,
        out: Path,
        *,
        segment_size: int = 5000,
        parsed: Any = None,
        embeddings: bool = False,
        dimensions: int | None = None,
    ) -> None:
        """``parsed`` is the Arrow type of the run's ``parsed`` column, if it has a schema;
        ``embeddings``: the run embeds (``dimensions``: its ``--dimensions``)."""
        super().__init__(
            out / "journal",
            out / "results",
            out / "damaged",
            lambda: result_schema(parsed, self.dimensions),
            required=("id", "status"),
            segment_size=segment_size,
        )
        self.out = out
        self.embeddings = embeddings
        self.dimensions = dimensions if embeddings else None
        """The length of the ``embedding`` column's vectors, once fixed."""
        self.fixed_by = "--dimensions" if self.dimensions is not None else None
        """What fixed ``dimensions``, for the message of a vector of another length."""

    def open(self) -> None:
        """Check that the parts already written hold the same kind of run (with vectors of the
        same length), then recover what a crash left (``JournalStore.open``)."""
        had = self._part_dimensions()
        if had is not None:
            have, asked = had, self.dimensions if self.embeddings else 0
            if (have == 0) != (asked == 0):
                what = "embeddings" if have else "answers without an 'embedding' column"
                ask = "embeddings" if self.embeddings else "no embeddings"
                raise UsageError(
                    f"{self.out} holds {what}, and this run asks for {ask}: use "
                    "another output directory"
                )
            if asked is not None and have != asked:
                raise UsageError(
                    f"{self.out} holds vectors of {have} dimensions and this run asks for "
                    f"--dimensions {asked}: the 'embedding' column has one length (use another "
                    f"output directory, or --dimensions {have})"
                )
            if self.embeddings and self.dimensions is None:
                self.dimensions, self.fixed_by = have, "the vectors already in it"
        super().open()

    def _part_dimensions(self) -> int | None:
        """The vector length of the first readable part (0: it has no ``embedding`` column);
        None when there is no part yet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for seq in self._numbers(self.results_dir, PART):
            try:
                schema = pq.read_schema(self._part(seq))
            except (pa.ArrowInvalid, OSError):
                continue  # a damaged part: open() sets it aside
            if "embedding" not in schema.names:
                return 0
            return int(schema.field("embedding").type.list_size)
        return None

    def _typed(self) -> bool:
        return not self.embeddings or self.dimensions is not None

    def fit(self, record: Record) -> Record:
        """``record`` as it can be written: the first vector fixes the column's length, and a
        vector of another length makes the row an error saying so (its cost is kept: it was
        billed)."""
        vector = record.embedding
        if vector is None or not self.embeddings:
            return record
        if self.dimensions is None:
            self.dimensions, self.fixed_by = len(vector), f"its first answer ({record.id})"
        if len(vector) == self.dimensions:
            return record
        why = (
            f"the answer has {len(vector)} dimensions and this run's 'embedding' column has "
            f"{self.dimensions} (fixed by {self.fixed_by}): one run directory holds vectors of "
            "one length (another model, or --dimensions, writes to another)"
        )
        return replace(
            record, status="error", embedding=None, error=why, error_kind="invalid_output"
        )

    def append(self, record: Record) -> int | None:
        """Write one finished job durably (``append_row``); the job counts as finished only
        once this returns."""
        return self.append_row(record.to_dict())

    def _leftovers(self) -> list[int]:
        """Journal segments kept back from compaction (their type not known yet)."""
        return [
            seq for seq in self._numbers(self.journal_dir, _SEG) if not self._part(seq).exists()
        ]

    def finished(self) -> tuple[IdMap, list[str]]:
        """Every finished job as a compact map id -> request fingerprint, and the ids of those
        that ended in error. Read part by part, so memory stays small for millions of rows."""
        keys, values = array("Q"), array("Q")
        errors: list[str] = []
        for seq in self._numbers(self.results_dir, PART):
            t = self._read(self._part(seq), ["id", "status", "fingerprint"])
            if t is None:
                continue
            ids, statuses, prints = (t.column(i).to_pylist() for i in range(3))
            for job_id, status, fp in zip(ids, statuses, prints, strict=True):
                keys.append(id_hash(job_id))
                values.append(int(fp, 16) if fp else 0)
                if status == "error":
                    errors.append(job_id)
        for seq in self._leftovers():
            for row in read_segment(self._segment(seq), self.required):
                fp = row.get("fingerprint")
                keys.append(id_hash(row["id"]))
                values.append(int(fp, 16) if isinstance(fp, str) and fp else 0)
                if row["status"] == "error":
                    errors.append(row["id"])
        return IdMap(keys, values), errors

    def remove(self, ids: set[str]) -> int:
        """Drop the rows of ``ids`` from the parts (to send those jobs again); return how many.

        Each part is rewritten without them under a temporary name and renamed over itself, so a
        crash leaves every row either kept or dropped, never both nor half a part.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if not ids:
            return 0
        wanted = pa.array(sorted(ids), pa.string())
        removed = 0
        for seq in self._numbers(self.results_dir, PART):
            part = self._part(seq)
            table = self._read(part)
            if table is None:
                continue
            keep = pc.invert(pc.is_in(table.column("id"), value_set=wanted))
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows:
                continue
            removed += table.num_rows - kept.num_rows
            if kept.num_rows == 0:
                with writing(part):
                    part.unlink()
            else:
                self._write_part(part, kept)
        with writing(self.results_dir):
            fsync_dir(self.results_dir)
        for seq in self._leftovers():
            removed += self._remove_from_segment(seq, ids)
        return removed

    def _remove_from_segment(self, seq: int, ids: set[str]) -> int:
        """Drop the rows of ``ids`` from a segment kept in the journal, rewritten whole (a temp
        name, fsync, rename) as a part is."""
        segment = self._segment(seq)
        rows = read_segment(segment, self.required)
        kept = [row for row in rows if row["id"] not in ids]
        if len(kept) == len(rows):
            return 0
        self._closed.pop(seq, None)
        tmp = segment.with_name(segment.name + ".tmp")
        with writing(segment):
            with tmp.open("wb") as f:
                f.write(b"".join(dumps(row) + b"\n" for row in kept))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, segment)
            fsync_dir(self.journal_dir)
        return len(rows) - len(kept)
