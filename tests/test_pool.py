"""Pools: a pool file validated when read, jobs spread over the endpoints serving their model,
an endpoint that refuses a model disabled for it while the others go on, a spent day moving work
to the others, priority, the ``endpoint`` column, and the mock's projects sharing limits."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from batcher._cli.main import main
from batcher._config.limits import Limits, LimitTable
from batcher.mock import MockConfig, MockServer
from tests.helpers import read_results, write_jsonl


def _jobs(tmp_path: Path, n: int, model: str = "m") -> Path:
    rows = [{"id": f"j{i}", "prompt": f"say {i}", "model": model} for i in range(n)]
    return write_jsonl(tmp_path / "jobs.jsonl", rows)


def _pool(tmp_path: Path, text: str, name: str = "pool.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(jobs: Path, out: Path, pool: Path, *flags: str) -> int:
    return main(["run", str(jobs), "--out", str(out), "--pool", str(pool), "--no-progress", *flags])


TWO = """
[[endpoint]]
name = "one"
provider = "openai"
mock = "instant"
rpm = 6000
models = ["m"]

[[endpoint]]
name = "two"
provider = "openai"
mock = "instant"
rpm = 6000
models = ["m"]
"""


def test_jobs_spread_over_the_endpoints_and_the_endpoint_column_names_each(
    tmp_path: Path,
) -> None:
    jobs = _jobs(tmp_path, 60)
    assert _run(jobs, tmp_path / "out", _pool(tmp_path, TWO), "--max-concurrency", "8") == 0
    rows = read_results(tmp_path / "out")
    assert len(rows) == 60 and all(r["status"] == "ok" for r in rows.values())
    by = {name: sum(r["endpoint"] == name for r in rows.values()) for name in ("one", "two")}
    assert by["one"] + by["two"] == 60 and min(by.values()) >= 10, by


def test_a_job_answered_by_another_endpoint_is_not_a_changed_job(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 10)
    out = tmp_path / "out"
    # endpoints calling the model by their own names first...
    renamed = TWO.replace('models = ["m"]', 'models = { "m" = "their-m" }')
    assert _run(jobs, out, _pool(tmp_path, renamed)) == 0
    before = read_results(out)
    assert {r["model"] for r in before.values()} == {"their-m"}
    # ...then other endpoints by our name: what is asked is the same, so nothing is sent again
    other = TWO.replace('"one"', '"three"').replace('"two"', '"four"')
    assert _run(jobs, out, _pool(tmp_path, other, "other.toml"), "--redo-changed") == 0
    assert read_results(out) == before


def test_a_run_without_a_pool_names_its_endpoint_default(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    assert main(["run", str(jobs), "--out", str(tmp_path / "o"), "--mock", "instant"]) == 0
    assert {r["endpoint"] for r in read_results(tmp_path / "o").values()} == {"default"}


def test_a_bad_key_disables_that_endpoint_and_the_other_does_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BAD_KEY", "bad-key-123")
    pool = TWO.replace(
        'name = "one"\nprovider = "openai"',
        'name = "one"\nprovider = "openai"\nkey_env = "BAD_KEY"',
    )
    jobs = _jobs(tmp_path, 30)
    with caplog.at_level(logging.WARNING, logger="batcher"):
        assert _run(jobs, tmp_path / "out", _pool(tmp_path, pool)) == 0
    rows = read_results(tmp_path / "out")
    assert len(rows) == 30 and {r["endpoint"] for r in rows.values()} == {"two"}
    assert all(r["status"] == "ok" for r in rows.values())
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "endpoint one no longer serves m" in warning and "$BAD_KEY" in warning
    assert "bad-key-123" not in warning


def test_when_no_endpoint_can_serve_a_model_the_run_exits_4_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAD_KEY", "bad-key-123")
    pool = TWO.replace('provider = "openai"', 'provider = "openai"\nkey_env = "BAD_KEY"')
    assert _run(_jobs(tmp_path, 5), tmp_path / "out", _pool(tmp_path, pool)) == 4
    err = capsys.readouterr().err
    assert "endpoint one" in err and "endpoint two" in err and "bad-key-123" not in err


def test_an_endpoint_serves_a_model_under_its_own_name(tmp_path: Path) -> None:
    pool = TWO.replace('models = ["m"]', 'models = { "m" = "their-m" }', 1)
    pool = pool.replace('name = "two"', 'name = "two"\npriority = -1')
    jobs = _jobs(tmp_path, 4)
    assert _run(jobs, tmp_path / "out", _pool(tmp_path, pool), "--max-concurrency", "1") == 0
    rows = read_results(tmp_path / "out")
    assert {r["endpoint"] for r in rows.values()} == {"one"}  # preferred, and never busy
    assert {r["model"] for r in rows.values()} == {"their-m"}  # as the endpoint answered


def test_priority_fills_the_preferred_endpoint_first(tmp_path: Path) -> None:
    pool = TWO.replace('name = "two"', 'name = "two"\npriority = 5')
    jobs = _jobs(tmp_path, 12)
    assert _run(jobs, tmp_path / "out", _pool(tmp_path, pool), "--max-concurrency", "1") == 0
    by = [r["endpoint"] for r in read_results(tmp_path / "out").values()]
    # without the priority every tie goes to the first endpoint, "one"; with it, "two" takes
    # them. Routing is a preference: on a loaded machine a job that finds "two" not able to
    # send within its next slot goes to "one" (seen in 2 of 3 full-suite runs, never alone)
    assert by.count("two") >= 10, by


def test_one_endpoints_spent_day_moves_its_work_to_the_other(tmp_path: Path) -> None:
    pool = TWO.replace("rpm = 6000", "rpm = 6000\nrpd = 5", 1)
    pool = pool.replace('name = "one"', 'name = "one"\npriority = 9')
    jobs = _jobs(tmp_path, 20)
    assert _run(jobs, tmp_path / "out", _pool(tmp_path, pool), "--on-daily-limit", "exit") == 0
    rows = read_results(tmp_path / "out")
    by = {name: sum(r["endpoint"] == name for r in rows.values()) for name in ("one", "two")}
    assert by == {"one": 5, "two": 15}, by


def test_both_spent_then_the_run_stops_for_the_day(tmp_path: Path) -> None:
    pool = TWO.replace("rpm = 6000", "rpm = 6000\nrpd = 3")
    jobs = _jobs(tmp_path, 10)
    assert _run(jobs, tmp_path / "out", _pool(tmp_path, pool), "--on-daily-limit", "exit") == 3
    assert len(read_results(tmp_path / "out")) == 6


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[endpoint]]\nname = "a"\nmock = "instant"\nmodels = ["m"]\ncolour = 1\n', "colour"),
        ('[[endpoint]]\nname = "a"\nmock = "instant"\nmodels = "m"\n', "models"),
        ('[[endpoint]]\nname = "a"\nkey_env = "NOT_SET_ANYWHERE"\nmodels = ["m"]\n', "key_env"),
        ('[[endpoint]]\nname = "a"\nmock = "instant"\nmodels = ["m"]\nrpm = "fast"\n', "rpm"),
        ('[[endpoint]]\nname = "a"\nmock = "instant"\nmodels = ["m"]\ntier = "nope"\n', "tier"),
        (
            '[[endpoint]]\nname = "a"\nmock = "instant"\nmodels = ["m"]\npriority = 1.5\n',
            "priority",
        ),
        ('[[endpoint]]\nmock = "instant"\nmodels = ["m"]\n', "name"),
        (
            '[[endpoint]]\nname = "a"\nprovider = "x"\nmock = "instant"\nmodels = ["m"]\n',
            "provider",
        ),
        (
            '[[endpoint]]\nname = "a"\nmock = "instant"\nmodels = ["m"]\n[limits.m]\nrpm = 0\n',
            "limits",
        ),
        ('[[endpoints]]\nname = "a"\n', "endpoints"),
    ],
)
def test_a_bad_pool_file_exits_2_naming_the_file_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    pool = _pool(tmp_path, text)
    assert _run(_jobs(tmp_path, 1), tmp_path / "out", pool) == 2
    err = capsys.readouterr().err
    assert str(pool) in err and field in err, err
    assert not (tmp_path / "out" / "results").exists()


def test_the_mocks_keys_of_one_project_share_its_limits_and_two_projects_do_not() -> None:
    config = MockConfig(
        limits=LimitTable(everywhere=Limits(rpd=2)),
        projects={"k1": "p", "k2": "p", "k3": "q"},
    )
    with MockServer(config) as server:
        url = server.base_url("openai") + "/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        def status(key: str) -> int:
            headers = {"authorization": f"Bearer {key}"}
            return httpx.post(url, json=body, headers=headers).status_code

        assert [status("k1"), status("k2")] == [200, 200]
        assert [status("k1"), status("k2")] == [429, 429]  # one budget: spent
        assert [status("k3"), status("k3"), status("k3")] == [200, 200, 429]  # its own


def test_an_endpoint_that_is_down_gets_no_new_jobs_and_is_dropped_after_max_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("DEAD_KEY", "k")
    pool = TWO.replace(
        'name = "one"\nprovider = "openai"\nmock = "instant"',
        f'name = "one"\nprovider = "openai"\nbase_url = "http://127.0.0.1:{dead}/v1"\n'
        'key_env = "DEAD_KEY"\npriority = 9',
    )
    jobs = _jobs(tmp_path, 40)
    flags = ("--max-outage", "2s", "--max-concurrency", "4")
    assert _run(jobs, tmp_path / "out", _pool(tmp_path, pool), *flags) == 0
    rows = read_results(tmp_path / "out")
    assert len(rows) == 40 and {r["endpoint"] for r in rows.values()} == {"two"}
    assert all(r["status"] == "ok" for r in rows.values())


def test_a_pool_whose_keys_are_all_refused_names_every_refusal_in_its_last_word() -> None:
    from types import SimpleNamespace
    from typing import Any

    from batcher._config.pool_file import EndpointSpec
    from batcher._core.errors import FatalProviderError
    from batcher._engine.outcome import Fatal
    from batcher._engine.pool import Pool
    from batcher._engine.pool_executor import PoolExecutor

    def executor(name: str) -> Any:
        target = SimpleNamespace(
            where=f"the {name} mock", key_source=f"${name.upper()}_KEY", redact=lambda s: s
        )
        return SimpleNamespace(target=target)

    pool = Pool(None)
    for name in ("one", "two"):
        spec = EndpointSpec(name=name, provider="openai", models={"m": "m"})
        pool.add(spec, None, executor(name), None, owned=False)  # type: ignore[arg-type]
    run = PoolExecutor(pool, None)  # type: ignore[arg-type]
    refused = FatalProviderError("invalid_api_key", status=401)
    # one job meets endpoint two's refusal; another, sent to one meanwhile, meets one's and
    # then finds no endpoint left: its last word names both
    run._disable(pool.routes[1], "m", refused, [])
    refusals: list[str] = []
    run._disable(pool.routes[0], "m", refused, refusals)
    outcome = run._none_left("m", refusals, None, None)
    assert isinstance(outcome, Fatal)
    message = str(outcome.error)
    assert "endpoint one: the API key from $ONE_KEY was refused by the one mock" in message
    assert "endpoint two: the API key from $TWO_KEY was refused by the two mock" in message


MIXED = """
[[endpoint]]
name = "oa"
provider = "openai"
mock = "instant"
rpm = 6000
models = ["m"]

[[endpoint]]
name = "gm"
provider = "gemini"
mock = "instant"
rpm = 6000
models = ["m"]
"""


def test_a_schema_with_a_pool_that_mixes_providers_types_every_answer(tmp_path: Path) -> None:
    """Each endpoint asks for the schema in its own wire's form; every row, whichever endpoint
    answered it, is checked and typed by the one schema."""
    from tests.schema_models import Invoice

    jobs = _jobs(tmp_path, 40)
    out = tmp_path / "out"
    flags = ("--schema", "tests.schema_models:Invoice", "--max-concurrency", "8")
    assert _run(jobs, out, _pool(tmp_path, MIXED), *flags) == 0
    rows = read_results(out)
    assert len(rows) == 40
    by = {name: [r for r in rows.values() if r["endpoint"] == name] for name in ("oa", "gm")}
    assert by["oa"] and by["gm"], {k: len(v) for k, v in by.items()}
    for row in rows.values():
        assert row["status"] == "ok", row
        Invoice.model_validate(row["parsed"])  # typed by the one schema, whichever wire
        assert row["parsed"]["currency"] in ("EUR", "USD", "JPY")


def _chunks(out: Path) -> list[dict[str, object]]:
    lines = (out / "batches.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "chunk"]


BATCH_POOL = """
[[endpoint]]
name = "one"
provider = "openai"
mock = "instant"
models = ["m"]
batch_queue_tokens = 12

[[endpoint]]
name = "two"
provider = "gemini"
mock = "instant"
models = { "m" = "gemini-m" }
batch_queue_tokens = 12
"""


def test_a_pool_in_batch_mode_splits_a_models_jobs_over_its_endpoints(tmp_path: Path) -> None:
    """Each endpoint's batch queue is respected: with room for a few jobs in each, the chunks
    go to both endpoints (each with its own key and wire, its name for the model), each chunk
    is logged with its endpoint, and every row says which endpoint's batch answered it."""
    jobs = _jobs(tmp_path, 24)
    out = tmp_path / "out"
    flags = ("--mode", "batch", "--poll-interval", "0.2")
    assert _run(jobs, out, _pool(tmp_path, BATCH_POOL), *flags) == 0
    rows = read_results(out)
    assert len(rows) == 24 and all(
        r["status"] == "ok" and r["via"] == "batch" for r in rows.values()
    )
    chunks = _chunks(out)
    assert {c["endpoint"] for c in chunks} == {"one", "two"}
    assert all(int(c["tokens"]) <= 12 for c in chunks)  # type: ignore[call-overload]
    by_chunk = {i: c["endpoint"] for c in chunks for i in c["ids"]}  # type: ignore[attr-defined]
    for job_id, row in rows.items():
        assert row["endpoint"] == by_chunk[job_id]
    # a rerun finds every job done and submits nothing
    assert _run(jobs, out, _pool(tmp_path, BATCH_POOL), *flags) == 0
    assert len(_chunks(out)) == len(chunks)


PRIORITY_BATCH = """
[[endpoint]]
name = "low"
provider = "openai"
mock = "instant"
models = ["m"]

[[endpoint]]
name = "high"
provider = "openai"
mock = "instant"
models = ["m"]
priority = 1
"""


def test_a_pool_in_batch_mode_submits_through_the_higher_priority_first(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 10)
    out = tmp_path / "out"
    assert _run(jobs, out, _pool(tmp_path, PRIORITY_BATCH), "--mode", "batch") == 0
    assert {c["endpoint"] for c in _chunks(out)} == {"high"}
    assert {r["endpoint"] for r in read_results(out).values()} == {"high"}


def test_a_batch_sent_by_an_endpoint_the_rerun_lacks_is_named(
    tmp_path: Path,
    start_mock: Callable[[MockConfig], MockServer],
    api_keys: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rerun without the endpoint whose key submitted a pending batch cannot collect it: it
    exits 2 naming the endpoint, rather than looking for the batch with another key."""
    server = start_mock(MockConfig(batch_delay=3600.0))
    url = server.base_url("openai")
    two = f"""
[[endpoint]]
name = "a"
base_url = "{url}"
key_env = "OPENAI_API_KEY"
models = ["m"]

[[endpoint]]
name = "b"
base_url = "{url}"
key_env = "OPENAI_API_KEY"
models = ["m"]
priority = 1
"""
    jobs = _jobs(tmp_path, 4)
    out = tmp_path / "out"
    assert _run(jobs, out, _pool(tmp_path, two), "--mode", "batch", "--no-wait") == 6
    assert {c["endpoint"] for c in _chunks(out)} == {"b"}
    only_a = two.split("[[endpoint]]")[1]
    capsys.readouterr()
    assert (
        _run(jobs, out, _pool(tmp_path, f"[[endpoint]]{only_a}", "a.toml"), "--mode", "batch") == 2
    )
    assert "endpoint 'b'" in capsys.readouterr().err
    assert not (out / "results").exists() or not read_results(out)


def test_priority_decides_between_idle_endpoints_however_slow_the_clock_reads() -> None:
    """Two idle endpoints can both send now, so the preferred one is picked, even when a thread
    switch between two clock readings (10 ms and more on a loaded machine, more than a request's
    spacing at 6,000 RPM) makes the first endpoint look later than the second: every lane is
    judged at one reading."""
    from typing import Any

    from batcher._admission.lane import Lane
    from batcher._config.pool_file import EndpointSpec
    from batcher._engine.pool import Pool

    class SlowReads:
        """A clock whose first reading is 0 and every later one 20 ms on."""

        def __init__(self) -> None:
            self.reads = 0

        def monotonic(self) -> float:
            self.reads += 1
            return 0.0 if self.reads == 1 else 0.02

        def time(self) -> float:
            return 1_700_000_000.0

    clock: Any = SlowReads()
    pool = Pool(None)
    for name, priority in (("one", 5), ("two", 0)):
        spec = EndpointSpec(name=name, provider="openai", models={"m": "m"}, priority=priority)
        lanes: Any = {"m": Lane("m", Limits(rpm=6000), clock)}
        pool.add(spec, None, None, lanes, owned=False)  # type: ignore[arg-type]
    route = pool.pick("m")
    assert route is not None and route.spec.name == "one"
