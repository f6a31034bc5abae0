"""Tables and data frames as a run's input: pyarrow, pandas, polars and Hugging Face datasets, with
the column options of Parquet files, read a record batch at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import batcher
from batcher import ColumnOptions, InputError
from batcher._jobs import JobSource
from tests.helpers import read_results

ROWS = [{"doc": f"d{i}", "text": f"document number {i}"} for i in range(2100)]
"""More rows than one record batch (2048), so that a frame is read in several."""


def _table() -> pa.Table:
    return pa.Table.from_pylist(ROWS)


def _frames() -> dict[str, Any]:
    return {
        "pyarrow.Table": _table,
        "pyarrow.RecordBatchReader": lambda: pa.RecordBatchReader.from_batches(
            _table().schema, _table().to_batches(max_chunksize=1000)
        ),
        "pandas": lambda: pytest.importorskip("pandas").DataFrame(ROWS),
        "polars": lambda: pytest.importorskip("polars").DataFrame(ROWS),
        "datasets": lambda: pytest.importorskip("datasets").Dataset.from_list(ROWS),
    }


@pytest.mark.parametrize("kind", list(_frames()))
def test_a_frame_runs_with_the_column_options(kind: str, tmp_path: Path) -> None:
    frame = _frames()[kind]()
    summary = batcher.run_sync(
        frame,
        tmp_path / "out",
        mock="instant",
        model="m",
        prompt_template="Summarize: {text}",
        id_column="doc",
    )
    assert (summary.total, summary.ok) == (len(ROWS), len(ROWS))
    results = read_results(tmp_path / "out")
    assert set(results) == {r["doc"] for r in ROWS}
    assert results["d2099"]["source"] == "jobs[2099]"


def test_a_frame_without_ids_numbers_its_rows(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"prompt": ["a", "b", "c"]}, index=[10, 20, 30])
    summary = batcher.run_sync(frame, tmp_path / "out", mock="instant", model="m")
    assert summary.ok == 3
    results = read_results(tmp_path / "out")
    assert set(results) == {"job-1", "job-2", "job-3"}
    assert "__index_level_0__" not in pa.Table.from_pandas(frame, preserve_index=False).schema.names


def test_a_dataset_selection_is_what_runs() -> None:
    datasets = pytest.importorskip("datasets")
    picked = datasets.Dataset.from_list(ROWS).select([3, 1, 4])
    source = JobSource(picked, ColumnOptions(prompt_column="text", id_column="doc"))
    assert [j.id for j in source] == ["d3", "d1", "d4"]


def test_a_frame_missing_a_column_is_one_problem() -> None:
    source = JobSource(_table(), ColumnOptions(prompt_column="body"), default_model="m")
    with pytest.raises(InputError) as e:
        source.scan()
    assert len(e.value.problems) == 1
    assert "no column(s) ['body']; the data has ['doc', 'text']" in str(e.value)


def test_a_frame_without_a_prompt_column_says_how_to_name_one() -> None:
    with pytest.raises(InputError, match="--prompt-column"):
        JobSource(_table(), default_model="m").scan()


def test_a_frame_is_read_twice_the_same() -> None:
    """The scan and the sending pass each read the frame: a reader is read once, into a table."""
    reader = pa.RecordBatchReader.from_batches(_table().schema, _table().to_batches())
    source = JobSource(reader, ColumnOptions(prompt_column="text"), default_model="m")
    assert source.scan() == len(ROWS)
    assert sum(1 for _ in source) == len(ROWS)


def test_results_table_holds_every_finished_job(tmp_path: Path) -> None:
    """``batcher.results_table``: the parts and the journal not yet compacted, as one table."""
    from batcher._rundir.store import ResultStore
    from tests.helpers import make_record

    out = tmp_path / "out"
    batcher.run_sync(_table(), out, mock="instant", model="m", prompt_column="text")
    store = ResultStore(out)  # a later run's rows, still in its journal
    store.open()
    store.append(make_record(1))
    try:
        table = batcher.results_table(out)
    finally:
        store.close()
    assert table.num_rows == len(ROWS) + 1
    assert "j1" in table.column("id").to_pylist()
    assert batcher.results_table(out, columns=["id", "status"]).column_names == ["id", "status"]
    frame = table.to_pandas()
    assert (frame["status"] == "ok").all()
    with pytest.raises(batcher.UsageError, match="no column"):
        batcher.results_table(out, columns=["nope"])
    with pytest.raises(batcher.UsageError, match="holds no run"):
        batcher.results_table(tmp_path)
