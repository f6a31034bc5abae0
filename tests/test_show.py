"""``batcher show``: the results of a run as a table in the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher._cli.main import main
from batcher.mock import MockServer
from tests.helpers import read_results, run_cli, write_jsonl

pytestmark = pytest.mark.usefixtures("api_keys")


@pytest.fixture
def run_dir(tmp_path: Path, mock_server: MockServer) -> Path:
    rows = [{"id": f"job-{i}", "prompt": f"say {i}", "model": "gpt-4o-mini"} for i in range(5)]
    rows.append({"id": "bad-1", "prompt": "refuse me [[fail:400]]", "model": "gpt-4o-mini"})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out) == 1
    return out


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["show", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_show_prints_the_first_rows_with_their_cost(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    results = read_results(run_dir)
    code, out, _ = _show(capsys, str(run_dir), "-n", "3")
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if "status" in line)
    assert header.split() == ["id", "status", "model", "in", "out", "cost", "text"]
    body = [line for line in lines if line.strip().startswith(("job-", "bad-"))]
    assert len(body) == 3
    for line in body:
        row = results[line.split()[0]]
        assert str(row["input_tokens"]) in line.split() or row["status"] == "error"
        assert row["text"] is None or row["text"][:20] in line
    assert f"3 of 6 results in {run_dir} (-n 6 shows them all)" in out
    assert all(len(line) <= 120 for line in lines)


def test_show_errors_and_chosen_columns(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = _show(capsys, str(run_dir), "--errors")
    assert code == 0
    assert "bad-1" in out and "permanent" in out and "HTTP 400" in out
    assert "job-0" not in out
    assert "1 of 1 errors" in out

    code, out, _ = _show(capsys, str(run_dir), "--columns", "id,latency_ms", "-n", "10")
    assert code == 0
    assert "ms" in out and "text" not in out and "6 of 6 results" in out


def test_show_names_what_it_cannot_show(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _show(capsys, str(run_dir), "--columns", "id,colour")
    assert code == 2 and "no column colour" in err and "cost_usd" in err
    code, _, err = _show(capsys, str(tmp_path / "nothing"))
    assert code == 2 and "holds no batcher run" in err
    code, _, err = _show(capsys, str(run_dir), "-n", "-1")
    assert code == 2


def test_show_the_parsed_column_of_a_schema_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    jobs = Path(__file__).parents[1] / "jobs"
    out = tmp_path / "out"
    args = [
        "run",
        str(jobs / "tickets.jsonl"),
        "--out",
        str(out),
        "--mock",
        "--model",
        "gpt-4o-mini",
    ]
    assert main([*args, "--schema", str(jobs / "tickets.schema.json")]) == 0
    capsys.readouterr()
    code, shown, err = _show(capsys, str(out), "--columns", "id,parsed")
    assert code == 0, err
    body = [line for line in shown.splitlines() if line.lstrip().startswith("t")]
    assert body and all('{"' in line for line in body)


def test_show_lists_rows_in_input_order_not_completion_order(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    from batcher._rundir.results import iter_rows

    # the parts as a run might have finished the jobs: job-4 first, bad-1 (the input's last) last
    for part in (run_dir / "results").glob("*.parquet"):
        pq.write_table(pq.read_table(part).sort_by([("id", "descending")]), part)
    order = [r["id"] for r in iter_rows(run_dir, ["id"])]
    assert order[0] == "job-4" and len(order) == 6
    # neither the stored order nor id order (bad-1 first) is the input's
    code, out, _ = _show(capsys, str(run_dir), "--columns", "id,source", "-n", "4")
    ids = [line.split()[0] for line in out.splitlines() if line.strip().startswith(("job", "bad"))]
    assert code == 0 and ids == ["job-0", "job-1", "job-2", "job-3"]
    assert "4 of 6 results" in out
    code, out, _ = _show(capsys, str(run_dir), "--errors")
    assert code == 0 and "bad-1" in out and "1 of 1 errors" in out


def test_each_part_s_first_rows_are_picked_in_input_order() -> None:
    """Arrow's key (``_first_in_order``) orders rows as ``input_order`` does: files by their place
    among the inputs, then lines; Python jobs first; other files after; no source (or one over
    two lines) last; and Python's where Arrow cannot (a line number past 64 bits)."""
    import pyarrow as pa

    from batcher._cli.show import _first_in_order
    from batcher._rundir.results import input_order

    inputs = ["b.jsonl", "a.parquet", "b.jsonl"]  # given twice: its last place counts
    sources = [
        "a.parquet row 10", "b.jsonl:2", "b.jsonl:10", "jobs[3]", "jobs[12]", "old.jsonl:1",
        None, "weird", "a.parquet row 9", "b.jsonl:2", "c:d:7", "a.parquet:x", "b.jsonl\n:1",
        "old.jsonl row 1:2",
    ]  # fmt: skip
    ids = [f"r{i}" for i in range(len(sources))]
    ids[9] = "r0"  # a tie with row 1 but for the id
    table = pa.table({"id": ids, "source": sources})
    key = input_order(inputs)
    rows = table.to_pylist()
    expected = sorted(range(len(rows)), key=lambda i: key(rows[i]))
    for n in (1, 5, len(rows)):
        assert _first_in_order(table, inputs, n).to_pylist() == expected[:n]
    huge = pa.table({"id": ["x", "y"], "source": ["b.jsonl:99999999999999999999", "b.jsonl:1"]})
    assert _first_in_order(huge, inputs, 2).to_pylist() == [1, 0]


def test_show_abbreviates_an_embedding_to_its_dimension_and_first_values(
    tmp_path: Path,
    mock_server: MockServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    rows = [{"id": f"d{i}", "text": f"document {i}"} for i in range(3)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = ("--model", "text-embedding-3-small", "--endpoint", "embeddings", "--dimensions", "8")
    assert run_cli(mock_server, "openai", jobs, out, *argv) == 0
    capsys.readouterr()
    code, shown, err = _show(capsys, str(out), "--columns", "id,embedding")
    assert code == 0, err
    vectors = {r["id"]: r["embedding"] for r in read_results(out).values()}
    body = [line.split(None, 1) for line in shown.splitlines() if line.lstrip().startswith("d")]
    assert sorted(i for i, _ in body) == ["d0", "d1", "d2"]
    for job, cell in body:
        first = ", ".join(f"{x:.4g}" for x in vectors[job][:4])
        assert cell.strip() == f"[8] {first}, …"
    # a column the run lacks (no --schema here) is refused, naming those it has
    code, _, err = _show(capsys, str(out), "--columns", "id,parsed")
    assert code == 2 and "no column parsed" in err
