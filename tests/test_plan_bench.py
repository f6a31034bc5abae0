"""``batcher plan`` and ``batcher bench`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher._cli.main import main
from tests.helpers import write_jsonl


def _jobs(tmp_path: Path, n: int) -> Path:
    rows = [
        {"id": str(i), "prompt": "hello world " * 10, "model": "gemini-2.5-flash"} for i in range(n)
    ]
    return write_jsonl(tmp_path / "jobs.jsonl", rows)


def test_plan_says_rpd_binds_on_the_free_tier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(_jobs(tmp_path, 45)), "--tier", "gemini-free"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("45 jobs, about ")
    assert "limits: 10 RPM, 250,000 TPM, 20 RPD" in out
    assert "RPD binds: 3 quota days (20 requests a day)" in out


def test_plan_names_the_binding_per_minute_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _jobs(tmp_path, 300)
    assert main(["plan", str(jobs), "--rpm", "100", "--tpm", "1000000"]) == 0
    out = capsys.readouterr().out
    assert "RPM alone: 3.0 min" in out and "binding: RPM; about 3.0 min" in out
    assert main(["plan", str(jobs), "--rpm", "100000", "--tpm", "6000"]) == 0
    assert "binding: TPM" in capsys.readouterr().out


def test_plan_refuses_bad_input_like_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n')
    assert main(["plan", str(path), "--tier", "gemini-tier1"]) == 2
    assert f"{path}:1" in capsys.readouterr().err


def test_bench_against_the_mock_measures_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "bench.png"
    code = main(
        [
            "bench",
            "--tier",
            "gemini-tier1",
            "--model",
            "gemini-2.5-flash",
            "--seconds",
            "2",
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "gemini-2.5-flash on the mock provider" in out
    assert "limits 1,000 RPM, 1,000,000 TPM, 10,000 RPD" in out
    assert "of the ceiling" in out and "answered 429: 0.00%" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_exits_2_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import batcher._cli.bench

    def no_bench(**_: object) -> None:
        raise AssertionError("the bench ran")

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    monkeypatch.setattr(batcher._cli.bench, "run_bench", no_bench)
    png = tmp_path / "bench.png"
    args = ["bench", "--tier", "gemini-tier1", "--seconds", "2", "--plot", str(png)]
    assert main(args) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not png.exists()


def test_tiers_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiers"]) == 0
    out = capsys.readouterr().out
    for name in [
        "gemini-free",
        "gemini-tier1",
        "gemini-tier2",
        "gemini-tier3",
        *(f"openai-tier{i}" for i in range(1, 6)),
    ]:
        assert f"\n{name} (" in out
    assert "gemini-2.5-flash         10 / 250,000 / 20" in out
