"""Typed outputs end to end: a schema in, validated typed ``parsed`` columns out, on the mock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batcher
from batcher.mock import MockServer
from tests.helpers import mock_stats, read_results, run_cli, write_jsonl

pytestmark = pytest.mark.usefixtures("api_keys")

ROOT = Path(__file__).resolve().parent.parent
TICKETS = ROOT / "jobs" / "tickets.schema.json"
MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash"}

INVOICE_TYPE = pa.struct(
    [
        ("vendor", pa.string()),
        ("currency", pa.string()),
        ("paid", pa.bool_()),
        (
            "lines",
            pa.list_(
                pa.struct([("sku", pa.string()), ("quantity", pa.int64()), ("price", pa.float64())])
            ),
        ),
        ("note", pa.string()),
        ("discount", pa.int64()),
    ]
)


def _jobs(path: Path, n: int = 6, *, model: str = "gpt-4o-mini", **extra: Any) -> Path:
    rows = [
        {
            "id": f"j{i}",
            "prompt": f"Invoice {i} from Acme Tools, {i + 2} bolts paid",
            "model": model,
        }
        | extra
        for i in range(n)
    ]
    return write_jsonl(path / "jobs.jsonl", rows)


def _parsed_matches_text(row: dict[str, Any]) -> None:
    """The ``parsed`` column holds exactly what the answer's text says (absent fields as null)."""
    answer = json.loads(row["text"])
    parsed = row["parsed"]
    assert parsed is not None
    for key, value in answer.items():
        if value is None:
            assert parsed[key] is None
        elif key == "order":
            assert parsed[key] == value
        else:
            assert parsed[key] == value, key


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_json_schema_file_on_each_provider(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    jobs = _jobs(tmp_path, model=MODELS[provider])
    out = tmp_path / "out"
    assert run_cli(mock_server, provider, jobs, out, "--schema", str(TICKETS)) == 0
    rows = read_results(out)
    assert len(rows) == 6
    table = pq.read_table(out / "results")
    assert table.schema.field("parsed").type == pa.struct(
        [
            ("customer", pa.string()),
            ("product", pa.string()),
            ("sentiment", pa.string()),
            ("priority", pa.int64()),
            ("tags", pa.list_(pa.string())),
            ("order", pa.struct([("id", pa.string()), ("refund", pa.bool_())])),
        ]
    )
    for row in rows.values():
        assert row["status"] == "ok" and row["attempts"] == 1
        _parsed_matches_text(row)
        assert row["parsed"]["sentiment"] in ("positive", "neutral", "negative")
        assert 1 <= row["parsed"]["priority"] <= 5
        assert len(row["parsed"]["tags"]) <= 4
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["schema"]["schema"] == json.loads(TICKETS.read_text())


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_pydantic_model_on_each_provider(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    jobs = _jobs(tmp_path, model=MODELS[provider])
    out = tmp_path / "out"
    code = run_cli(mock_server, provider, jobs, out, "--schema", "tests.schema_models:Invoice")
    assert code == 0
    table = pq.read_table(out / "results")
    assert table.schema.field("parsed").type == INVOICE_TYPE
    from tests.schema_models import Invoice

    for row in table.to_pylist():
        assert row["status"] == "ok"
        # strict mode answers null for an optional field that is not nullable: left out
        answer = {k: v for k, v in json.loads(row["text"]).items() if v is not None or k == "note"}
        invoice = Invoice.model_validate(answer)  # the answer fits the model...
        parsed = row["parsed"]  # ...and the column holds the model's values, defaults filled
        assert parsed == invoice.model_dump(mode="json")
        assert 1 <= len(parsed["lines"]) <= 3


def test_gemini_openai_route_with_a_dict_schema(tmp_path: Path, mock_server: MockServer) -> None:
    """Gemini's OpenAI-compatible route takes OpenAI's response_format; the library takes a
    JSON Schema dict."""
    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["spam", "ham"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "words": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["label", "score", "words"],
    }
    jobs = [{"id": f"m{i}", "prompt": f"message {i}: win a prize now"} for i in range(4)]
    summary = batcher.run_sync(
        jobs,
        tmp_path / "out",
        provider="openai",
        base_url=f"{mock_server.url}/v1beta/openai",
        model="gemini-2.5-flash",
        schema=schema,
    )
    assert summary.ok == 4
    rows = read_results(tmp_path / "out")
    for job_id, row in rows.items():
        assert row["parsed"]["label"] in ("spam", "ham")
        assert 0 <= row["parsed"]["score"] <= 1
        prompt_words = {"message", job_id[1:], "win", "a", "prize", "now"}
        assert row["parsed"]["words"] and set(row["parsed"]["words"]) <= prompt_words
    assert mock_stats(mock_server)["requests"] == 4


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_invalid_answers_are_retried_and_count_as_attempts(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    """``[[invalid:2]]``: not JSON, then JSON of the wrong type, then a valid answer."""
    rows = [
        {"id": "twice", "prompt": "Acme invoice [[invalid:2]]", "model": MODELS[provider]},
        {"id": "fine", "prompt": "Acme invoice", "model": MODELS[provider]},
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, provider, jobs, out, "--schema", str(TICKETS)) == 0
    results = read_results(out)
    assert results["twice"]["status"] == "ok" and results["twice"]["attempts"] == 3
    assert results["fine"]["attempts"] == 1
    _parsed_matches_text(results["twice"])
    assert mock_stats(mock_server)["requests"] == 4


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_invalid_until_attempts_run_out_is_an_error_row(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    rows = [{"id": "bad", "prompt": "Acme [[invalid:9]]", "model": MODELS[provider]}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--schema", str(TICKETS), "--max-attempts", "3")
    assert run_cli(mock_server, provider, jobs, out, *flags) == 1
    row = read_results(out)["bad"]
    assert row["status"] == "error" and row["error_kind"] == "invalid_output"
    assert row["attempts"] == 3
    assert row["parsed"] is None
    assert row["text"] == '{"cut": "short'  # the third answer, raw
    assert row["error"].startswith("the answer is not JSON")
    assert row["input_tokens"] and row["output_tokens"]


def test_a_schema_violation_names_the_field(tmp_path: Path, mock_server: MockServer) -> None:
    rows = [{"id": "bad", "prompt": "Acme [[invalid:2]]", "model": "gpt-4o-mini"}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--schema", "tests.schema_models:Invoice", "--max-attempts", "2")
    assert run_cli(mock_server, "openai", jobs, out, *flags) == 1
    row = read_results(out)["bad"]
    assert row["text"] == "7"
    assert row["error"] == "(root): Input should be a valid dictionary or instance of Invoice"


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_an_answer_cut_off_by_max_tokens_is_invalid(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    jobs = _jobs(tmp_path, 1, model=MODELS[provider], max_tokens=5)
    out = tmp_path / "out"
    flags = ("--schema", str(TICKETS), "--max-attempts", "2")
    assert run_cli(mock_server, provider, jobs, out, *flags) == 1
    row = read_results(out)["j0"]
    assert row["error_kind"] == "invalid_output" and row["attempts"] == 2
    cut = "length" if provider == "openai" else "MAX_TOKENS"
    assert row["finish_reason"] == cut
    assert row["error"] == f"the answer was cut off by max_tokens (finish reason {cut})"


def test_what_strict_mode_cannot_express_is_refused_before_sending(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = {
        "type": "object",
        "properties": {"meta": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    path = tmp_path / "loose.json"
    path.write_text(json.dumps(schema))
    jobs = _jobs(tmp_path, 2)
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out", "--schema", str(path)) == 2
    err = capsys.readouterr().err
    assert f"schema {path} at properties.meta.additionalProperties: strict mode cannot" in err
    code = run_cli(
        mock_server, "openai", jobs, tmp_path / "o2", "--schema", "tests.schema_models:Loose"
    )
    assert code == 2
    assert "tests.schema_models:Loose at properties.extra.additionalProperties" in (
        capsys.readouterr().err
    )
    assert mock_stats(mock_server)["requests"] == 0
    # Gemini takes free-form objects: their column is a JSON string
    gemini = _jobs(tmp_path, 2, model="gemini-2.5-flash")
    assert run_cli(mock_server, "gemini", gemini, tmp_path / "o3", "--schema", str(path)) == 0
    table = pq.read_table(tmp_path / "o3" / "results")
    assert table.schema.field("parsed").type == pa.struct([("meta", pa.string())])


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no/such/file.json", "no/such/file.json: cannot be read"),
        ("tests.schema_models:Nope", "tests.schema_models has no attribute 'Nope'"),
        ("tests.no_such_module:Model", "cannot import 'tests.no_such_module'"),
        ("tests.schema_models:Field", "is not a pydantic (v2) model class"),
    ],
)
def test_a_schema_that_cannot_be_loaded_is_a_usage_error(
    tmp_path: Path,
    mock_server: MockServer,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    says: str,
) -> None:
    jobs = _jobs(tmp_path, 1)
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out", "--schema", spec) == 2
    assert says in capsys.readouterr().err


def test_a_schema_file_that_is_not_json(tmp_path: Path, mock_server: MockServer) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(batcher.SchemaError, match=r"bad.json: is not JSON"):
        batcher.run_sync(_jobs(tmp_path, 1), tmp_path / "out", schema=str(bad), mock="instant")


def test_a_rerun_keeps_one_schema(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _jobs(tmp_path, 3)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, "--schema", str(TICKETS)) == 0
    assert run_cli(mock_server, "openai", jobs, out, "--schema", str(TICKETS)) == 0
    assert mock_stats(mock_server)["requests"] == 3  # nothing sent again
    model = "tests.schema_models:Invoice"
    assert run_cli(mock_server, "openai", jobs, out, "--schema", model) == 2
    assert "holds a run with --schema" in capsys.readouterr().err
    assert run_cli(mock_server, "openai", jobs, out) == 2
    assert run_cli(mock_server, "openai", jobs, out, "--schema", model, "--redo-changed") == 0
    assert mock_stats(mock_server)["requests"] == 6  # a changed schema is a changed request
    assert pq.read_table(out / "results").schema.field("parsed").type == INVOICE_TYPE
    assert len(read_results(out)) == 3


def test_pydantic_stays_out_of_help_and_of_runs_without_a_schema(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 2)
    script = (
        "import sys\n"
        "from batcher._cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'pydantic' not in sys.modules, 'batcher --help imported pydantic'\n"
        f"code = main(['run', {str(jobs)!r}, '--mock', 'instant', '--model', 'm',\n"
        f"             '--out', {str(tmp_path / 'out')!r}, '--no-progress'])\n"
        "assert code == 0, code\n"
        "assert 'pydantic' not in sys.modules, 'a run without a schema imported pydantic'\n"
        f"code = main(['run', {str(jobs)!r}, '--mock', 'instant', '--model', 'm',\n"
        f"             '--out', {str(tmp_path / 'o2')!r}, '--no-progress',\n"
        f"             '--schema', {str(TICKETS)!r}])\n"
        "assert code == 0, code\n"
        "assert 'pydantic' in sys.modules  # the check can fail\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_example_runs_on_the_mock(tmp_path: Path) -> None:
    """README's example: jobs/tickets.jsonl with its JSON Schema and with its pydantic model."""
    for spec in ("jobs/tickets.schema.json", "jobs.tickets_model:Ticket"):
        out = tmp_path / spec.replace("/", "_")
        done = subprocess.run(
            [sys.executable, "-m", "batcher", "run", "jobs/tickets.jsonl", "--mock", "instant",
             "--model", "gpt-4o-mini", "--schema", spec, "--out", str(out), "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = read_results(out)
        assert len(rows) == 5 and all(r["status"] == "ok" for r in rows.values())
        assert rows["t5"]["attempts"] == 3  # its prompt carries [[invalid:2]]


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_batch_mode_asks_for_the_schema_and_checks_each_line(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    """Batch lines carry the schema; an invalid line goes into a later batch, like a failed one;
    the rows equal the online ones."""
    jobs = _jobs(tmp_path, 4, model=MODELS[provider])
    flags = ("--schema", str(TICKETS))
    assert run_cli(mock_server, provider, jobs, tmp_path / "on", *flags) == 0
    batched = (*flags, "--mode", "batch", "--poll-interval", "0.1")
    assert run_cli(mock_server, provider, jobs, tmp_path / "b", *batched) == 0
    online, batch = read_results(tmp_path / "on"), read_results(tmp_path / "b")
    for job_id, row in online.items():
        assert batch[job_id]["via"] == "batch"
        assert batch[job_id]["parsed"] == row["parsed"]
        assert batch[job_id]["fingerprint"] == row["fingerprint"]
    rows = [{"id": "odd", "prompt": "Acme [[invalid:1]]", "model": MODELS[provider]}]
    odd = write_jsonl(tmp_path / "odd.jsonl", rows)
    assert run_cli(mock_server, provider, odd, tmp_path / "odd", *batched) == 0
    row = read_results(tmp_path / "odd")["odd"]
    assert row["status"] == "ok" and row["attempts"] == 2  # its second batch
    _parsed_matches_text(row)
    assert len(mock_stats(mock_server)["batch_creates"]) == 3


def test_results_yields_model_instances_of_the_ok_rows(
    tmp_path: Path, mock_server: MockServer
) -> None:
    from tests.schema_models import Invoice

    rows = [
        {"id": f"j{i}", "prompt": f"Invoice {i} from Acme", "model": "gpt-4o-mini"}
        for i in range(5)
    ]
    rows.append({"id": "bad", "prompt": "Acme [[invalid:9]]", "model": "gpt-4o-mini"})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--schema", "tests.schema_models:Invoice", "--max-attempts", "2")
    assert run_cli(mock_server, "openai", jobs, out, *flags) == 1
    table = {r["id"]: r for r in read_results(out).values()}
    got = dict(batcher.results(out, schema=Invoice))
    assert set(got) == {f"j{i}" for i in range(5)}  # not the error row
    for job_id, invoice in got.items():
        assert isinstance(invoice, Invoice)
        assert invoice.model_dump(mode="json") == table[job_id]["parsed"]
    plain = dict(batcher.results(out))  # the schema run.json records: JSON data
    assert plain == {job_id: table[job_id]["parsed"] for job_id in got}
    with pytest.raises(batcher.SchemaError, match="does not store as the schema"):
        next(batcher.results(out, schema=TICKETS))
    assert run_cli(mock_server, "openai", jobs, tmp_path / "plain") == 0
    with pytest.raises(batcher.UsageError, match="holds no run with a --schema"):
        next(batcher.results(tmp_path / "plain", schema=Invoice))
    rows = dict(batcher.results(tmp_path / "plain"))  # no schema: each ok job's row
    plain_table = read_results(tmp_path / "plain")
    assert set(rows) == {k for k, r in plain_table.items() if r["status"] == "ok"} and rows
    assert all(rows[k]["text"] == plain_table[k]["text"] for k in rows)
    with pytest.raises(batcher.UsageError, match="holds no run"):
        next(batcher.results(tmp_path / "nothing"))


def test_plan_counts_the_schema_in_the_input_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batcher._cli.main import main

    jobs = _jobs(tmp_path, 10)
    assert main(["plan", str(jobs), "--tier", "openai-tier1"]) == 0
    bare = capsys.readouterr().out
    assert main(["plan", str(jobs), "--tier", "openai-tier1", "--schema", str(TICKETS)]) == 0
    typed = capsys.readouterr().out

    def tokens(text: str) -> int:
        return int(text.split("about ")[1].split(" input")[0].replace(",", ""))

    each = len(json.dumps(json.loads(TICKETS.read_text()), separators=(",", ":"))) // 4
    assert tokens(typed) - tokens(bare) >= 10 * (each - 2)
    assert "input tokens include the schema's" in typed
    loose = tmp_path / "loose.json"
    loose.write_text('{"type": "object"}')
    assert main(["plan", str(jobs), "--provider", "openai", "--schema", str(loose)]) == 2


def test_a_cluster_run_loads_the_schema_on_the_driver_for_its_workers() -> None:
    """The workers get the schema loaded (no file to read where they run), and a pydantic model
    by reference, so its own validation fills its defaults there as here."""
    import pickle

    from batcher._config.schema import OutputSchema, load_schema
    from batcher._core.completion import Completion
    from batcher.ray.mapping import check_options
    from tests.schema_models import Invoice

    for spec, model in ((str(TICKETS), None), ("tests.schema_models:Invoice", Invoice)):
        opts = check_options(batcher.RunOptions(ray="local", schema=spec))
        sent = pickle.loads(pickle.dumps(opts.requests.schema))
        assert isinstance(sent, OutputSchema) and sent.model is model
        assert sent.to_json() == load_schema(spec).to_json()  # source and name kept
    answer = '{"vendor": "Acme", "currency": "EUR", "paid": true, "lines": [{"sku": "b", '
    answer += '"quantity": 2, "price": 1.5}]}'
    completion = Completion(answer, "stop", 1, 1, "m", answer)
    assert sent.check(completion)["discount"] == 0
