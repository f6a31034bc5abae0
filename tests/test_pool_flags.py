"""Nothing given on the command line is silently ignored, and every check that can be made before
the first request is made then (issue 22): bad input into a new directory leaves nothing there,
and a job of a model the pool does not serve is bad input (exit 2), naming its file, line, id and
model. ``--rpm/--tpm/--rpd`` go beneath every endpoint's own limits; the options each endpoint
sets for itself are refused with ``--pool``."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from batcher import InputError, UsageError
from batcher._cli.main import main
from batcher._config.limits import Limits
from batcher._engine.runner import Runner, RunOptions
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


def test_rate_flags_apply_beneath_each_endpoints_own_limits(tmp_path: Path) -> None:
    """An endpoint's own value wins, whether it sets it for every model (``own``'s rpm), for one
    model (``own``'s tpm of n) or by its tier (``tiered``'s gpt-4o); a flag fills each limit left
    unset, for every model."""
    opts = RunOptions(pool_file=str(_pool(tmp_path)), rpm=60, tpm=1000, rpd=500)
    runner = Runner(_jobs(tmp_path, ["m"]), tmp_path / "out", opts)
    assert runner.pool_specs is not None
    own, bare, tiered = (spec.limits.for_model for spec in runner.pool_specs)
    assert own("m") == Limits(rpm=6000, tpm=1000, rpd=500)
    assert own("n") == Limits(rpm=6000, tpm=90000, rpd=500)
    assert bare("m") == bare("n") == Limits(rpm=60, tpm=1000, rpd=500)
    assert tiered("gpt-4o") == Limits(rpm=500, tpm=30_000, rpd=10_000)  # the tier's, whole
    assert tiered("gpt-4.1") == Limits(rpm=500, tpm=30_000, rpd=500)  # the tier sets no rpd
    assert tiered("m") == Limits(rpm=60, tpm=1000, rpd=500)  # not in the tier
    assert not (tmp_path / "out").exists()


def test_rate_flags_with_a_pool_reach_the_run_and_its_record(tmp_path: Path) -> None:
    pool = POOL.replace("rpm = 6000\n", "")
    jobs = _jobs(tmp_path, ["m", "m"])
    out = tmp_path / "out"
    argv = ["run", str(jobs), "--out", str(out), "--pool", str(_pool(tmp_path, pool))]
    assert main([*argv, "--rpm", "6000", "--no-progress"]) == 0
    assert len(read_results(out)) == 2
    limits = json.loads((out / "run.json").read_text())["limits"]
    assert limits["everywhere"] == {"rpm": 6000}  # the first endpoint's, with the flag beneath


@pytest.mark.parametrize(
    ("flags", "named", "key"),
    [
        (["--mock"], "--mock", "mock"),
        (["--mock", "instant"], "--mock", "mock"),
        (["--provider", "openai"], "--provider", "provider"),  # the default, but given
        (["--provider", "gemini"], "--provider", "provider"),
        (["--base-url", "http://127.0.0.1:9/v1"], "--base-url", "base_url"),
        (["--api-key-env", "HOME"], "--api-key-env", "key_env"),
        (["--tier", "openai-tier1"], "--tier", "tier"),
        (["--limits", "limits.toml"], "--limits", "limits"),
    ],
)
def test_a_flag_each_endpoint_sets_for_itself_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str, key: str
) -> None:
    (tmp_path / "limits.toml").write_text('["m"]\nrpm = 1\n')
    assert _run(tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert f"{named} cannot be used with --pool" in err, err
    assert f"sets its own ({key})" in err, err
    assert not (tmp_path / "out").exists()


def test_every_refused_flag_is_named_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--provider", "gemini", "--base-url", "http://127.0.0.1:9/v1", "--rpm", "5"]
    assert _run(tmp_path, *flags) == 2
    err = capsys.readouterr().err
    assert "--provider, --base-url cannot be used with --pool" in err, err
    assert "--rpm" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ({"mock": "default"}, "--mock"),
        ({"provider": "gemini"}, "--provider"),
        ({"base_url": "http://127.0.0.1:9/v1"}, "--base-url"),
        ({"api_key": "sk-secret"}, "api_key"),
        ({"api_key_env": "HOME"}, "--api-key-env"),
        ({"tier": "openai-tier1"}, "--tier"),
        ({"limits_file": "limits.toml"}, "--limits"),
    ],
)
def test_the_library_refuses_them_too(tmp_path: Path, option: dict[str, str], named: str) -> None:
    opts = RunOptions(pool_file=str(_pool(tmp_path)), **option)
    with pytest.raises(UsageError, match=f"^{named} cannot be used with --pool") as info:
        Runner(_jobs(tmp_path, ["m"]), tmp_path / "out", opts)
    assert "sk-secret" not in str(info.value)
    assert not (tmp_path / "out").exists()
