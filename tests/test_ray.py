"""batcher on a Ray cluster: one local cluster of two workers on loopback, shared by the module.

The cluster stays on this machine: 127.0.0.1 only, no dashboard, no usage statistics, a HOME
whose ``ray_bootstrap_config.yaml`` stops the dashboard agent probing cloud metadata (README,
"Running on Ray"). Under CI a cluster that cannot start fails the tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batcher._config.limits import Limits, LimitTable
from batcher.mock import MockConfig, MockServer
from batcher.mock._media import make_png
from batcher.ray.blocks import recover, wait_for_writers
from tests.helpers import mock_stats, read_results, run_command, write_jsonl

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.timeout(240),
]

StartMock = Callable[[MockConfig], MockServer]
RPM = 3000
WORKERS = 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local Ray cluster of two CPUs on 127.0.0.1; yields the environment it runs in and its
    address. The environment is set before Ray is imported: Ray reads some of it on import."""
    from batcher.ray import LOCAL_ENV

    home = tmp_path_factory.mktemp("ray-home")
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    env = {**LOCAL_ENV, "HOME": str(home)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import ray

        from batcher.ray import connect

        connect("local", num_cpus=WORKERS)
    except Exception as e:  # ImportError without the extra, or a cluster that cannot start
        _restore(saved)
        if os.environ.get("CI"):
            pytest.fail(f"no local Ray cluster ({type(e).__name__}: {e}); CI installs batcher[ray]")
        pytest.skip(f"no local Ray cluster ({type(e).__name__}: {e})")
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address  # the cluster stays on loopback
        yield {**env, "address": address}
    finally:
        ray.shutdown()
        _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _mock(start_mock: StartMock, latency: tuple[float, float] = (5.0, 20.0)) -> MockServer:
    """The mock enforcing RPM over a sliding minute, as a compatible server does."""
    limits = LimitTable(everywhere=Limits(rpm=RPM))
    return start_mock(MockConfig(latency_ms=latency, limits=limits, openai_per_second=False))


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i:04d}", "prompt": f"ray prompt {i}"} for i in range(n)]


def _options(server: MockServer) -> dict[str, Any]:
    return {
        "model": "m",
        "base_url": server.base_url("openai"),
        "api_key": "sk-ray",
        "rpm": RPM,
        "max_concurrency": 8,
    }


def _per_second_bound() -> int:
    """The most a second may hold under the budget's pacing: 0.99 of the limit, plus a slot's
    lateness, plus one for the second's edges."""
    from batcher._admission.grants import LATE

    return int((1 + LATE) * RPM * 0.99 / 60) + 2


def test_two_workers_share_one_rpm_limit_and_finish_every_id_once(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    import ray.data

    from batcher.ray import process

    server = _mock(start_mock)
    rows = _rows(400)
    out = tmp_path / "out"
    ds = ray.data.from_items(rows, override_num_blocks=8)
    returned = process(ds, out, workers=WORKERS, batch_size=50, **_options(server)).take_all()

    assert sorted(r["id"] for r in returned) == [r["id"] for r in rows]
    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    assert all(r["status"] == "ok" and r["text"] for r in results.values())
    stats = httpx_stats(server)
    assert stats["by_status"] == {"200": len(rows)}  # no 429: the cluster stayed under the limit
    per_second = [accepted for accepted, _ in stats["timeline"].values()]
    assert max(per_second) <= _per_second_bound(), per_second
    assert not list((out / "journal").glob("*.jsonl"))  # every block compacted into a part

    # a second time: every id is done, nothing is sent, no row comes back
    again = process(ds, out, workers=WORKERS, batch_size=50, **_options(server)).take_all()
    assert again == []
    assert httpx_stats(server)["requests"] == len(rows)


def httpx_stats(server: MockServer) -> dict[str, Any]:
    """The mock's counters with its per-second timeline."""
    import httpx

    stats: dict[str, Any] = httpx.get(f"{server.url}/admin/stats?timeline=1").json()
    return stats


def test_rows_that_cannot_be_sent_come_back_as_errors(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    import ray.data

    from batcher.ray import process

    server = _mock(start_mock, latency=(0.0, 0.0))
    rows = [*_rows(3), {"id": "empty", "messages": []}]
    ds = ray.data.from_items(rows)
    returned = {r["id"]: r for r in process(ds, tmp_path, **_options(server)).take_all()}
    assert returned["empty"]["status"] == "error"
    assert returned["empty"]["error_kind"] == "invalid"
    assert all(returned[r["id"]]["status"] == "ok" for r in rows[:3])
    assert set(read_results(tmp_path)) == set(returned)


def _map_workers() -> list[int]:
    """Process ids of the cluster's block workers (Ray names them by their actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::MapWorker") and b"BlockWorker" in cmdline:
            pids.append(int(entry.name))
    return pids


def _under_way(out: Path, lines: int = 40) -> bool:
    """Whether workers have journaled ``lines`` results, or written a block's part."""
    if list(out.glob("results/part-*.parquet")):
        return True
    return sum(p.read_bytes().count(b"\n") for p in out.glob("journal/seg-*.jsonl")) >= lines


def test_a_worker_killed_mid_run_leaves_every_id_once(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    import ray.data

    from batcher.ray import process

    server = _mock(start_mock, latency=(20.0, 60.0))
    rows = _rows(300)
    out = tmp_path / "out"
    ds = ray.data.from_items(rows, override_num_blocks=6)
    dataset = process(ds, out, workers=WORKERS, batch_size=50, **_options(server))
    returned: list[dict[str, Any]] = []
    consumer = threading.Thread(target=lambda: returned.extend(dataset.take_all()))
    consumer.start()
    deadline = time.monotonic() + 120
    while not _under_way(out):
        assert time.monotonic() < deadline, "no block got going"
        time.sleep(0.05)
    victims = _map_workers()
    assert victims, "no block worker found to kill"
    os.kill(victims[0], signal.SIGKILL)
    consumer.join(timeout=200)
    assert not consumer.is_alive()

    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    assert all(r["status"] == "ok" for r in results.values())
    # the retried block skipped what the dead worker had journaled: at most its requests in
    # flight were sent twice
    assert mock_stats(server)["accepted"] <= len(rows) + 8


def test_a_killed_driver_resumes_like_a_local_run(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    server = _mock(start_mock, latency=(20.0, 60.0))
    rows = [{**r, "model": "m"} for r in _rows(300)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray"}
    command = run_command(
        jobs, out, server.base_url("openai"), "--rpm", str(RPM), "--ray", cluster["address"]
    )
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _under_way(out):
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the driver finished no job in time"
        time.sleep(0.05)
    driver.kill()
    driver.communicate()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    assert all(r["status"] == "ok" for r in results.values())
    assert "already done" in rerun.stdout
    status = subprocess.run(
        [*command[:3], "status", str(out)], env=env, capture_output=True, text=True
    )
    assert "done 300 / 300" in status.stdout
    # the cluster counted its requests in the quota store runs on this key share
    assert "all runs today, key $OPENAI_API_KEY" in status.stdout, status.stdout


def test_a_fatal_answer_stops_the_cluster_run_with_exit_4(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    server = _mock(start_mock, latency=(0.0, 0.0))
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(20))
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray"}
    command = run_command(
        jobs, tmp_path / "out", server.base_url("openai"), "--model", "no-such-model"
    )
    done = subprocess.run(
        [*command, "--ray", cluster["address"]], env=env, capture_output=True, text=True
    )
    assert done.returncode == 4, done.stderr[-3000:]
    assert "model 'no-such-model' is not available" in done.stderr
    # each worker stops on its first answer: a request or two, not one per job
    assert mock_stats(server)["requests"] <= 2 * WORKERS


def test_a_cluster_run_says_what_it_and_every_run_cost(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    import re

    server = _mock(start_mock, latency=(0.0, 0.0))
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(6))
    out = tmp_path / "out"
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray"}
    command = run_command(
        jobs, out, server.base_url("openai"), "--model", "gpt-4o-mini", "--ray", cluster["address"]
    )
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    assert first.returncode == 0, first.stderr[-3000:]
    cost = re.search(
        r"Cost: (\$[0-9.]+) this run; (\$[0-9.]+) in all \(gpt-4o-mini (\S+)\)\.", first.stdout
    )
    assert cost is not None, first.stdout
    assert cost[1] == cost[2] == cost[3] != "$0.00"
    # a rerun sends nothing and still says what the directory's results cost
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Cost: $0.00 this run; {cost[2]} in all (gpt-4o-mini {cost[2]})." in again.stdout


def test_import_batcher_does_not_import_ray() -> None:
    code = "import sys, batcher, batcher.ray; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mode", ["batch", "auto"])
def test_batches_with_ray_are_sent_from_this_machine_without_a_cluster(
    tmp_path: Path, start_mock: StartMock, mode: str
) -> None:
    """The provider runs a batch: no worker has anything to do, so the run submits and collects
    the batches itself, says so, and joins no cluster (the address here has none: joining it
    would fail)."""
    server = start_mock(MockConfig())
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(6))
    out = tmp_path / "out"
    command = run_command(jobs, out, server.base_url("openai"), "--model", "m")
    env = {**os.environ, "OPENAI_API_KEY": "sk-ray", "RAY_ADDRESS": "127.0.0.1:9"}
    flags = ("--ray", "127.0.0.1:9", "--mode", mode, "--batch-min", "1", "--poll-interval", "0.2")
    done = subprocess.run([*command, *flags], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"--mode {mode} needs no cluster" in done.stderr
    assert "--ray 127.0.0.1:9 is not joined" in done.stderr
    rows = read_results(out)
    assert len(rows) == 6 and {r["via"] for r in rows.values()} == {"batch"}


def test_sigint_ends_a_cluster_run_at_once_keeping_what_finished(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    server = _mock(start_mock, latency=(20.0, 60.0))
    rows = [{**r, "model": "m"} for r in _rows(1000)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray"}
    command = run_command(
        jobs, out, server.base_url("openai"), "--rpm", "1200", "--ray", cluster["address"]
    )
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _under_way(out):
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the driver finished no job in time"
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)  # 1000 jobs at 1200 RPM would take 50 s
    assert driver.returncode == 130, stderr[-3000:]
    assert b"Interrupted" in stderr
    wait_for_writers(out)  # the workers are gone or finish their block
    recover(out)  # what a rerun does first
    finished = read_results(out)  # fails if an id appears twice
    assert 0 < len(finished) < len(rows)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--schema", "tests.schema_models:Loose"), "strict mode"),
        (("--schema", "no/such/schema.json"), "cannot be read"),
        (("--endpoint", "images", "--schema", str(ROOT / "jobs" / "tickets.schema.json")), "JSON"),
        (("--modalities", "text,image"), "--provider gemini"),
    ],
    ids=["strict-mode", "missing-file", "images-api", "openai-modalities"],
)
def test_what_a_local_run_refuses_a_cluster_run_refuses_before_ray_starts(
    tmp_path: Path, flags: tuple[str, ...], says: str
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(2))
    command = run_command(jobs, tmp_path / "out", "http://127.0.0.1:9/v1", "--model", "m")
    env = {**os.environ, "OPENAI_API_KEY": "sk-ray", "RAY_ADDRESS": "127.0.0.1:9"}
    done = subprocess.run(
        [*command, "--ray", "127.0.0.1:9", *flags],
        env=env,
        cwd=ROOT,  # where tests.schema_models is importable
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr


def test_a_bad_jobs_file_is_refused_before_the_cluster_is_joined(tmp_path: Path) -> None:
    """The driver checks the inputs before it joins the cluster, as a local run checks them
    before it sends: a bad jobs file is refused at once even where no cluster answers (joining
    one at a dead address hung), and a new directory is left unmade."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": \n')
    command = run_command(jobs, tmp_path / "out", "http://127.0.0.1:9/v1", "--model", "m")
    env = {**os.environ, "OPENAI_API_KEY": "sk-ray", "RAY_ADDRESS": "127.0.0.1:9"}
    done = subprocess.run(
        [*command, "--ray", "127.0.0.1:9"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "jobs.jsonl:2: not valid JSON" in done.stderr
    assert not (tmp_path / "out").exists()


# --- what workers carry: the schema, images in and out -------------------------------------------


def _cluster_run(
    cluster: dict[str, str],
    jobs: Path,
    out: Path,
    base_url: str,
    *flags: str,
    cwd: Path = ROOT,
    ray: bool = True,
    exit: int = 0,
) -> subprocess.CompletedProcess[str]:
    """``batcher run`` as a user types it in ``cwd`` (with ``--ray`` on the cluster, or not);
    it must exit with ``exit``."""
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray", "GEMINI_API_KEY": "g-ray"}
    command = run_command(jobs, out, base_url, *flags)
    if ray:
        command += ["--ray", cluster["address"]]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=200)
    assert done.returncode == exit, done.stderr[-3000:]
    return done


def _invoices(n: int, model: str) -> list[dict[str, Any]]:
    prompts = (f"Invoice {i} from Acme Tools, {i + 2} bolts paid" for i in range(n))
    return [{"id": f"j{i}", "prompt": p, "model": model} for i, p in enumerate(prompts)]


@pytest.mark.parametrize(
    ("provider", "model", "schema"),
    [
        ("openai", "gpt-4o-mini", "tickets.schema.json"),  # relative to the driver's directory
        ("gemini", "gemini-2.5-flash", "tests.schema_models:Invoice"),  # its defaults filled
    ],
    ids=["json-schema-file", "pydantic-model"],
)
def test_a_schema_types_parsed_on_the_cluster_as_a_local_run_does(
    cluster: dict[str, str],
    start_mock: StartMock,
    tmp_path: Path,
    provider: str,
    model: str,
    schema: str,
) -> None:
    import pyarrow.parquet as pq

    server = _mock(start_mock, latency=(0.0, 0.0))
    base_url = server.base_url(provider)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _invoices(24, model))
    # the driver runs where the schema is named from: a file beside it, or the project's root
    # for a model (Ray puts the driver's directory on the workers' path)
    cwd = ROOT
    if schema.endswith(".json"):
        cwd = tmp_path / "project"
        cwd.mkdir()
        (cwd / schema).write_text((ROOT / "jobs" / schema).read_text())
    flags = ("--provider", provider, "--schema", schema)
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    _cluster_run(cluster, jobs, local, base_url, *flags, cwd=cwd, ray=False)
    _cluster_run(cluster, jobs, on_ray, base_url, *flags, cwd=cwd)

    want, got = pq.read_table(local / "results"), pq.read_table(on_ray / "results")
    assert got.schema.field("parsed").type == want.schema.field("parsed").type
    parsed = {r["id"]: r["parsed"] for r in want.to_pylist()}
    assert {r["id"]: r["parsed"] for r in got.to_pylist()} == parsed
    assert all(p is not None for p in parsed.values())
    if schema.endswith(":Invoice"):  # the model's default, filled on the worker
        left_out = [r for r in got.to_pylist() if "discount" not in json.loads(r["text"])]
        assert left_out and all(r["parsed"]["discount"] == 0 for r in left_out)
    manifest = json.loads((on_ray / "run.json").read_text())
    assert manifest["schema"] == json.loads((local / "run.json").read_text())["schema"]

    # a rerun without --ray takes the directory as its own: same schema, same requests
    sent = mock_stats(server)["requests"]
    _cluster_run(cluster, jobs, on_ray, base_url, *flags, "--redo-changed", cwd=cwd, ray=False)
    assert mock_stats(server)["requests"] == sent
    assert read_results(on_ray).keys() == parsed.keys()


def test_images_in_are_read_on_the_worker_that_sends_them(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    from tests.test_images import PNG, _desc

    server = _mock(start_mock, latency=(0.0, 0.0))
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(PNG)
    sample = f"{server.url}/mock-files/sample-24x12.png"
    rows = [
        {"id": "path", "prompt": "look", "images": ["pics/a.png"]},  # the job file's folder
        {"id": "url", "prompt": "look", "images": [sample]},  # fetched by the worker (Gemini)
        {"id": "both", "prompt": "look", "images": ["pics/a.png", sample]},
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--provider", "gemini", "--model", "gemini-2.5-flash")
    _cluster_run(cluster, jobs, out, server.base_url("gemini"), *flags, cwd=tmp_path.parent)

    results = read_results(out)
    sample_desc = _desc(make_png("sample-24x12.png", 24, 12))
    assert results["path"]["text"].endswith(f"look {_desc(PNG)}")
    assert results["url"]["text"].endswith(f"look {sample_desc}")
    assert results["both"]["text"].endswith(f"look {_desc(PNG)} {sample_desc}")
    assert mock_stats(server)["rejected"] == 0


@pytest.mark.parametrize(
    ("provider", "flags", "rows"),
    [
        (
            "gemini",
            ("--model", "gemini-2.5-flash-image", "--modalities", "text,image"),
            [{"id": f"g{i:02d}/x", "prompt": f"a lighthouse {i}"} for i in range(12)],
        ),
        (
            "openai",
            ("--model", "gpt-image-1", "--endpoint", "images", "--size", "16x16", "--ipm", "100"),
            [{"id": f"o{i:02d}", "prompt": f"a fox {i}", "n": 1 + i % 2} for i in range(12)],
        ),
    ],
    ids=["gemini-modalities", "openai-images-api"],
)
def test_images_answered_on_the_cluster_are_saved_once_per_job(
    cluster: dict[str, str],
    start_mock: StartMock,
    tmp_path: Path,
    provider: str,
    flags: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> None:
    import hashlib

    server = _mock(start_mock, latency=(0.0, 0.0))
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    base_url = server.base_url(provider)
    _cluster_run(cluster, jobs, out, base_url, "--provider", provider, *flags)

    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    named = []
    for row in rows:
        result = results[row["id"]]
        assert result["status"] == "ok", result
        assert len(result["images"]) == row.get("n", 1)
        for image in result["images"]:
            data = (out / image["path"]).read_bytes()
            assert image["path"].startswith("images/") and image["mime_type"] == "image/png"
            assert image["bytes"] == len(data)
            assert image["sha256"] == hashlib.sha256(data).hexdigest()
            named.append(image["path"])
    # every file a result names, each once, and nothing else: no temporary file, no orphan
    assert sorted(f"images/{p.name}" for p in (out / "images").iterdir()) == sorted(named)
    assert len(set(named)) == len(named)
    assert mock_stats(server)["requests"] == len(rows)


def test_process_takes_a_schema_and_returns_typed_rows(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq
    import ray.data

    from batcher._config.schema import load_schema
    from batcher.ray import process
    from tests.schema_models import Invoice

    server = _mock(start_mock, latency=(0.0, 0.0))
    rows = _invoices(8, "gpt-4o-mini")
    options = {**_options(server), "schema": Invoice}
    out = tmp_path / "out"
    returned = process(ray.data.from_items(rows), out, **options).take_all()

    typed = load_schema(Invoice).arrow_type()
    assert pq.read_table(out / "results").schema.field("parsed").type == typed
    by_id = {r["id"]: r for r in returned}
    assert by_id.keys() == {r["id"] for r in rows}
    for row in read_results(out).values():
        assert row["status"] == "ok"
        assert (
            by_id[row["id"]]["parsed"]
            == row["parsed"]
            == Invoice.model_validate(row["parsed"]).model_dump(mode="json")
        )


# --- what a cluster run shares: one spend -------------------------------------------------------


def test_a_budget_is_one_spend_for_the_whole_cluster(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    """Every worker reserves each job's worst case from one spend before sending it: the
    cluster stops as a local run does (exit 5, the same line), and a rerun with more goes on,
    sending nothing twice."""
    from batcher._config.prices import usd
    from tests.test_prices import PRICES

    server = _mock(start_mock, latency=(0.0, 5.0))
    n = 40
    rows = [{"id": f"j{i:02d}", "prompt": f"count to {i}", "max_tokens": 8} for i in range(n)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    (tmp_path / "prices.toml").write_text(PRICES)  # named from the driver's directory
    out = tmp_path / "out"
    base_url = server.base_url("openai")
    flags = ("--model", "m", "--prices", "prices.toml", "--max-concurrency", "4")

    first = _cluster_run(
        cluster, jobs, out, base_url, *flags, "--budget", "0.25", cwd=tmp_path, exit=5
    )
    done = read_results(out)  # fails if an id appears twice
    spent = sum(r["cost_usd"] for r in done.values())
    assert 0 < len(done) < n
    assert spent <= 0.25
    assert f"Stopped at the budget of $0.25: spent {usd(spent)}" in first.stderr
    assert f"{n - len(done)} jobs left" in first.stderr
    assert mock_stats(server)["requests"] == len(done)  # what was sent was kept

    _cluster_run(cluster, jobs, out, base_url, *flags, "--budget", "100", cwd=tmp_path)
    final = read_results(out)
    assert len(final) == n and all(r["status"] == "ok" for r in final.values())
    assert mock_stats(server)["requests"] == n  # nothing was sent twice
    assert all(final[job_id] == row for job_id, row in done.items())


def test_a_budget_on_the_cluster_needs_a_price_for_every_model(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    server = _mock(start_mock, latency=(0.0, 0.0))
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(4))
    flags = ("--model", "no-such-price", "--budget", "5")
    done = _cluster_run(cluster, jobs, tmp_path / "out", server.base_url("openai"), *flags, exit=2)
    assert "no price is known for model 'no-such-price'" in done.stderr
    assert "--prices FILE" in done.stderr
    assert mock_stats(server)["requests"] == 0


def test_process_under_a_budget_returns_the_rows_that_fitted(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    import ray.data

    from batcher.ray import process
    from tests.test_prices import PRICES

    server = _mock(start_mock, latency=(0.0, 0.0))
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    rows = [{**r, "max_tokens": 8} for r in _rows(30)]
    options = {**_options(server), "budget": 0.2, "prices_file": str(prices)}
    out = tmp_path / "out"
    returned = process(ray.data.from_items(rows), out, **options).take_all()

    results = read_results(out)
    assert 0 < len(returned) == len(results) < len(rows)
    assert sum(r["cost_usd"] for r in results.values()) <= 0.2
    assert mock_stats(server)["requests"] == len(results)


# --- pools: each endpoint's lanes on every worker drawing on its own cluster-wide budget ----------


def test_a_pool_that_mixes_providers_runs_on_the_cluster_with_a_schema(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """The workers route each job as a local pool does, through embedded mocks the driver runs;
    each row names its endpoint and is typed by the one schema; the day's counts are kept per
    endpoint; a rerun sends nothing."""
    from tests.schema_models import Invoice
    from tests.test_pool import MIXED

    rows = [{"id": f"j{i}", "prompt": f"say {i}", "model": "m"} for i in range(40)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    (tmp_path / "pool.toml").write_text(MIXED)
    out = tmp_path / "out"
    env = {**os.environ, **cluster}
    command = [
        sys.executable,
        "-m",
        "batcher",
        "run",
        str(jobs),
        "--out",
        str(out),
        "--no-progress",
        "--pool",
        str(tmp_path / "pool.toml"),
        "--schema",
        "tests.schema_models:Invoice",
        "--max-concurrency",
        "4",
        "--ray",
        cluster["address"],
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]

    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    by = {name: [r for r in results.values() if r["endpoint"] == name] for name in ("oa", "gm")}
    assert by["oa"] and by["gm"], {k: len(v) for k, v in by.items()}
    for row in results.values():
        assert row["status"] == "ok", row
        Invoice.model_validate(row["parsed"])  # whichever wire answered it
    ledger = json.loads((out / "ledger.json").read_text())["models"]
    assert {"oa/m", "gm/m"} <= set(ledger)
    manifest = json.loads((out / "run.json").read_text())
    assert set(manifest["endpoints"]) == {"oa", "gm"}

    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "40 already done" in again.stdout
    assert read_results(out) == results


def test_each_endpoint_of_a_pool_is_paced_for_the_whole_cluster(
    cluster: dict[str, str],
    start_mock: StartMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two endpoints, each a server enforcing its RPM: every worker's lanes of an endpoint draw
    on that endpoint's budget, so neither server sees more than its limit, and both serve."""
    import ray.data

    from batcher.ray import process

    servers = {name: _mock(start_mock) for name in ("one", "two")}
    pool = tmp_path / "pool.toml"
    endpoints = []
    for name, server in servers.items():
        monkeypatch.setenv(f"KEY_{name.upper()}", f"sk-{name}")
        endpoints.append(
            f'[[endpoint]]\nname = "{name}"\nbase_url = "{server.base_url("openai")}"\n'
            f'key_env = "KEY_{name.upper()}"\nrpm = {RPM}\nmodels = ["m"]\n'
        )
    pool.write_text("\n".join(endpoints))
    rows = _rows(600)
    ds = ray.data.from_items(rows, override_num_blocks=8)
    options = {"model": "m", "pool_file": str(pool), "max_concurrency": 8}
    returned = process(ds, tmp_path / "out", workers=WORKERS, batch_size=75, **options).take_all()

    assert sorted(r["id"] for r in returned) == [r["id"] for r in rows]
    results = read_results(tmp_path / "out")  # fails if an id appears twice
    assert all(r["status"] == "ok" for r in results.values())
    for name, server in servers.items():
        stats = httpx_stats(server)
        served = sum(r["endpoint"] == name for r in results.values())
        assert served > 0 and stats["by_status"] == {"200": served}, (name, stats["by_status"])
        per_second = [accepted for accepted, _ in stats["timeline"].values()]
        assert max(per_second) <= _per_second_bound(), (name, per_second)


# --- what a cluster counts: the day's requests, in the ledger and the quota store -----------------


def _project_pool(tmp_path: Path, servers: dict[str, MockServer], project: str = "p") -> Path:
    """A pool file of endpoints on one project, each a server of its own."""
    pool = tmp_path / "pool.toml"
    pool.write_text(
        "\n".join(
            f'[[endpoint]]\nname = "{name}"\nbase_url = "{server.base_url("openai")}"\n'
            f'key_env = "OPENAI_API_KEY"\nproject = "{project}"\nrpm = {RPM}\nmodels = ["m"]\n'
            for name, server in servers.items()
        )
    )
    return pool


def test_the_day_counts_each_request_sent_once_under_its_endpoint(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path
) -> None:
    """Two endpoints on one project: the ledger keeps each one's requests under its own name,
    as a local pool does, and they and the quota store count exactly what the servers saw
    (counted when sent, not when granted)."""
    import anyio

    from batcher._admission.quota import spent_today

    servers = {name: _mock(start_mock, latency=(0.0, 5.0)) for name in ("one", "two")}
    pool = _project_pool(tmp_path, servers)
    rows = [{**r, "model": "m"} for r in _rows(300)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray"}
    command = [
        *run_command(jobs, out, "http://unused")[:7],  # no --base-url: the pool's
        "--no-progress",
        "--pool",
        str(pool),
        "--max-concurrency",
        "8",
        "--ray",
        cluster["address"],
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]

    results = read_results(out)
    assert len(results) == len(rows)
    seen = {name: mock_stats(server)["requests"] for name, server in servers.items()}
    assert sum(seen.values()) == len(rows)
    ledger = json.loads((out / "ledger.json").read_text())["models"]
    assert {name: ledger[f"{name}/m"]["count"] for name in servers} == seen
    spent = anyio.run(spent_today, None, time.time())
    assert [(s.label, s.model, s.count) for s in spent] == [("project p", "m", len(rows))]


def test_a_cluster_and_a_local_run_on_one_redis_store_share_one_budget(
    cluster: dict[str, str], start_mock: StartMock, tmp_path: Path, redis_url: str
) -> None:
    """With ``--quota-store redis://...`` the workers' lanes share the key's limits through the
    store, as a local run's do: a cluster run and a local run at once stay, together, under one
    RPM (no second holds more than one pace allows) and one RPD (the server sees no more than
    it), and the store counts exactly the requests the server saw."""
    import anyio

    from batcher._admission.quota import spent_today

    rpm, rpd = 600, 150
    server = start_mock(
        MockConfig(
            latency_ms=(0.0, 5.0),
            limits=LimitTable(everywhere=Limits(rpm=rpm)),
            openai_per_second=False,
        )
    )
    rows = [{**r, "model": "m"} for r in _rows(300)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    env = {**os.environ, **cluster, "OPENAI_API_KEY": "sk-ray"}
    flags = ("--rpm", str(rpm), "--rpd", str(rpd), "--on-daily-limit", "exit")
    flags += ("--quota-store", redis_url)
    base_url = server.base_url("openai")

    def start(name: str, *more: str) -> subprocess.Popen[str]:
        command = run_command(jobs, tmp_path / name, base_url, *flags, *more)
        return subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    runs = {"ray": start("ray", "--ray", cluster["address"])}
    deadline = time.monotonic() + 120
    while not _under_way(tmp_path / "ray", lines=5):  # the cluster sends: the local run joins
        assert runs["ray"].poll() is None, runs["ray"].communicate()
        assert time.monotonic() < deadline, "the cluster sent nothing in time"
        time.sleep(0.05)
    runs["local"] = start("local")
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=200)
        assert run.returncode == 3, (name, stderr[-3000:])  # the rest waits for the reset

    finished = {name: len(read_results(tmp_path / name)) for name in runs}
    assert all(finished.values()), finished  # both sent
    assert sum(finished.values()) == rpd  # the day used whole, and no more
    stats = httpx_stats(server)
    assert stats["by_status"] == {"200": rpd}, stats["by_status"]
    # one pace, not two: any five seconds hold what one lane would send in them (a holder's new
    # share reaches the others within a beat, so one second may hold a few more)
    per_second = {int(t): accepted for t, (accepted, _) in stats["timeline"].items()}
    five = [sum(per_second.get(t + i, 0) for i in range(5)) for t in per_second]
    assert max(five) <= 5 * rpm / 60 + 6, per_second
    spent = anyio.run(spent_today, redis_url, time.time())
    assert [(s.model, s.count) for s in spent] == [("m", rpd)]


# --- a worker without a cluster: what it sends through --------------------------------------------


class _Handle:
    """A ``grants.Budget`` reached as a Ray actor handle is (``handle.method.remote(...)``), in
    this process: each ``remote`` call is the budget's coroutine."""

    def __init__(self, budget: object) -> None:
        self._budget = budget

    def __getattr__(self, name: str) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(remote=getattr(self._budget, name))


@pytest.mark.parametrize("loopback_mock", [True, False], ids=["driver-mock", "other-server"])
def test_a_worker_reaches_the_drivers_mock_directly_whatever_proxy_is_set(
    start_mock: StartMock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback_mock: bool
) -> None:
    """The environment names a proxy (which could not reach anyone's loopback): a worker sends
    to the driver's embedded mock directly, as a local run sends to its own, and to any other
    endpoint through the proxy, as a local run does."""
    import pyarrow as pa

    from batcher._admission.grants import Budget
    from batcher._config.options import RunOptions
    from batcher._config.pool_file import EndpointSpec
    from batcher.ray.endpoints import Endpoint
    from batcher.ray.worker import BlockWorker

    server = _mock(start_mock, latency=(0.0, 0.0))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    options = RunOptions(model="m", base_url=server.base_url("openai"), api_key="sk-ray")
    spec = EndpointSpec("default", "openai", models=None, limits=options.limits.table())
    budget = _Handle(Budget(options.limits.table()))
    endpoint = Endpoint(spec, options.endpoint, "the api_key option", budget, None, loopback_mock)
    worker = BlockWorker(str(tmp_path), options, [endpoint])
    target = worker.pool.routes[0].executor.target  # type: ignore[attr-defined]
    if not loopback_mock:
        assert target.proxy is not None and target.proxy.url == "http://127.0.0.1:9"
        return
    assert target.proxy is None
    rows = worker(pa.Table.from_pylist([{"id": "a", "prompt": "hi"}, {"id": "b", "prompt": "yo"}]))
    assert sorted(rows.column("status").to_pylist()) == ["ok", "ok"]
    import httpx

    stats = httpx.get(f"{server.url}/admin/stats", trust_env=False).json()  # not by the proxy
    assert stats["requests"] == 2
    assert set(read_results(tmp_path)) == {"a", "b"}


def test_bad_input_into_a_new_directory_leaves_nothing_there_as_a_local_run(
    cluster: dict[str, str], tmp_path: Path, start_mock: StartMock
) -> None:
    """The driver starts its run as ``Runner`` does (``_rundir.start``): a new directory's inputs
    are checked before the lock and the store write there."""
    server = _mock(start_mock, latency=(0.0, 0.0))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": \n')
    out = tmp_path / "out"
    done = _cluster_run(cluster, jobs, out, server.base_url("openai"), "--model", "m", exit=2)
    assert "jobs.jsonl:2: not valid JSON" in done.stderr
    assert not out.exists()
    assert mock_stats(server)["requests"] == 0


def test_the_responses_api_runs_on_the_cluster(
    cluster: dict[str, str], tmp_path: Path, start_mock: StartMock
) -> None:
    """``--endpoint responses`` on the cluster: each worker sends the jobs to ``/v1/responses``
    as a local run does (the mock's reasoning tokens, which chat does not spend, are counted in
    each row's output), every id once."""
    from batcher._core.tokens import count_tokens
    from batcher.mock._responses import REASONING_TOKENS

    server = _mock(start_mock, latency=(0.0, 5.0))
    rows = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(30)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--model", "gpt-5-mini", "--endpoint", "responses")
    _cluster_run(cluster, jobs, out, server.base_url("openai"), *flags)
    got = read_results(out)
    assert set(got) == {r["id"] for r in rows}
    assert {r["status"] for r in got.values()} == {"ok"}
    thought = REASONING_TOKENS["medium"]  # gpt-5-mini reasons by default
    for row in got.values():
        assert row["output_tokens"] == count_tokens(row["text"]) + thought
    assert mock_stats(server)["requests"] == len(rows)
