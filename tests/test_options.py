"""Options: one definition per option, flags built from it, messages naming what the user typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batcher import BadOption, RunOptions, UsageError
from batcher._cli.main import main
from batcher._cli.parser import build_parser
from batcher._config.options import EndpointOptions, RequestOptions
from batcher._config.quota_options import LimitOptions
from batcher._core.flag import duration
from tests.helpers import read_results, write_jsonl


def test_flat_keywords_and_groups_build_the_same_options() -> None:
    flat = RunOptions(provider="gemini", model="m", rpm=60, retry_errors=True, id_column="k")
    grouped = RunOptions(
        endpoint=EndpointOptions(provider="gemini"),
        requests=RequestOptions(model="m"),
        limits=LimitOptions(rpm=60),
        resume=flat.resume,
        columns=flat.columns,
    )
    assert flat == grouped
    assert RunOptions(**flat.flat()) == flat
    with pytest.raises(TypeError, match="unknown option 'modle'"):
        RunOptions(modle="m")


def test_every_option_with_a_flag_is_a_flag_of_run() -> None:
    run = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
        if a.prog.endswith(" run")
    )
    dests = {a.dest for a in run._actions}
    assert set(RunOptions().flat()) - {"api_key", "grace"} <= dests


def test_the_library_names_parameters_and_the_cli_names_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BadOption, match=r"^max_concurrency must be at least 1$"):
        RunOptions(max_concurrency=0)
    jobs = write_jsonl(tmp_path / "j.jsonl", [{"id": "a", "prompt": "x"}])
    code = main(["run", str(jobs), "--out", str(tmp_path / "o"), "--max-concurrency", "0"])
    assert code == 2
    assert "batcher: error: --max-concurrency must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_abbreviated_flags_are_refused_not_guessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jsonl(tmp_path / "j.jsonl", [{"id": "a", "prompt": "x"}])
    with pytest.raises(SystemExit) as info:
        main(["run", str(jobs), "--out", str(tmp_path / "o"), "--mock", "--retry-err"])
    assert info.value.code == 2
    assert "unrecognized arguments: --retry-err" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mock_accepts_a_tier_name_as_its_preset(tmp_path: Path) -> None:
    jobs = write_jsonl(tmp_path / "j.jsonl", [{"id": str(i), "prompt": f"p{i}"} for i in range(3)])
    out = tmp_path / "out"
    argv = ["run", str(jobs), "--out", str(out), "--provider", "gemini", "--no-progress"]
    code = main([*argv, "--model", "gemini-2.5-flash", "--mock", "gemini-tier1"])
    assert code == 0
    assert len(read_results(out)) == 3
    assert json.loads((out / "run.json").read_text())["base_url"] == "mock"


def test_an_unknown_mock_preset_names_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_jsonl(tmp_path / "j.jsonl", [{"id": "a", "prompt": "x", "model": "m"}])
    assert main(["run", str(jobs), "--out", str(tmp_path / "o"), "--mock", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown mock preset 'nope'" in err and "gemini-tier1" in err


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h30m", 5400.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_a_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "x.jsonl", "--out", "o", "--max-outage", "soon"])
    assert info.value.code == 2
    assert "not a duration: 'soon'" in capsys.readouterr().err


def test_a_limits_file_is_resolved_once_and_stored(tmp_path: Path) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text('["m"]\nrpm = 7\n')
    table = LimitOptions(limits_file=str(limits), rpm=100).table()
    assert table.for_model("m").rpm == 7 and table.for_model("other").rpm == 100
    with pytest.raises(UsageError, match="not valid TOML"):
        limits.write_text("[[[")
        LimitOptions(limits_file=str(limits)).table()
