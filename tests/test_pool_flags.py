"""Nothing given on the command line is silently ignored, and every check that can be made before
the first request is made then (issue 22): bad input into a new directory leaves nothing there,
and a job of a model the pool does not serve is bad input (exit 2), naming its file, line, id and
model."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batcher import InputError
from batcher._cli import main
from batcher._runner import Runner, RunOptions
from tests.helpers import read_results, write_jsonl

POOL = """
[[endpoint]]
name = "own"
mock = "instant"
rpm = 6000
models = ["m"]
[endpoint.limits.n]
tpm = 90000

[[endpoint]]
name = "bare"
mock = "instant"
models = ["m", "n"]

[[endpoint]]
name = "tiered"
mock = "instant"
tier = "openai-tier1"
models = ["gpt-4o", "m"]
"""


def _pool(tmp_path: Path, text: str = POOL) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return path


def _jobs(tmp_path: Path, models: list[str]) -> Path:
    rows = [{"id": f"j{i}", "prompt": f"say {i}", "model": m} for i, m in enumerate(models)]
    return write_jsonl(tmp_path / "jobs.jsonl", rows)


def _run(tmp_path: Path, *flags: str, models: tuple[str, ...] = ("m", "m")) -> int:
    jobs = _jobs(tmp_path, list(models))
    out = str(tmp_path / "out")
    return main(["run", str(jobs), "--out", out, "--pool", str(_pool(tmp_path)), *flags])


def test_bad_input_into_a_new_directory_leaves_nothing_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b"}])
    out = tmp_path / "out"
    assert main(["run", str(jobs), "--out", str(out), "--mock", "instant", "--no-progress"]) == 2
    assert f"{jobs}:1 (job 'a'): no model" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_no_endpoint_serves_exits_2_naming_it_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, "--no-progress", models=("m", "gpt-4o", "other")) == 2
    err = capsys.readouterr().err
    line = f"{tmp_path / 'jobs.jsonl'}:3 (job 'j2'): no endpoint of the pool (--pool) serves"
    assert f"{line} model 'other'" in err, err
    assert "j1" not in err  # gpt-4o is served, by the tiered endpoint
    assert "internal error" not in err
    assert not (tmp_path / "out").exists()


def test_the_library_raises_input_error_before_the_directory_is_touched(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, ["nope", "m"])
    out = tmp_path / "out"

    async def enter() -> None:
        async with Runner(jobs, out, RunOptions(pool_file=str(_pool(tmp_path)))):
            raise AssertionError("entered")

    with pytest.raises(InputError) as info:
        anyio.run(enter)
    [problem] = info.value.problems
    assert (problem.where, problem.job_id) == (f"{jobs}:1", "j0")
    assert "model 'nope'" in problem.message
    assert not out.exists()


def test_in_a_directory_holding_a_run_the_job_is_refused_and_nothing_is_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, "--no-progress") == 0
    out = tmp_path / "out"
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    manifest = (out / "run.json").read_bytes()
    assert _run(tmp_path, "--no-progress", models=("m", "m", "other")) == 2
    assert "(job 'j2'): no endpoint of the pool (--pool) serves model 'other'" in (
        capsys.readouterr().err
    )
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (out / "run.json").read_bytes() == manifest
    assert len(read_results(out)) == 2
