"""Limit resolution: presets, flags and a per-model file, most specific last; bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher import UsageError
from batcher._config.limits import Limits, LimitTable, load_tiers


def test_presets_are_data_with_a_date_and_a_source() -> None:
    day, source, tiers = load_tiers()
    assert day and "ai.google.dev" in source
    assert tiers["gemini-free"].models["gemini-2.5-flash"] == Limits(10, 250_000, 20)
    assert tiers["gemini-tier3"].models["gemini-2.5-pro"].rpd is None
    assert {t.provider for t in tiers.values()} == {"gemini", "openai"}


def test_flags_override_the_preset_and_the_file_overrides_both(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text('["gemini-2.5-flash"]\nrpm = 7\n\n["other"]\ntpm = 500\n')
    table = LimitTable.build(tier="gemini-free", rpm=50, limits_file=path)
    assert table.for_model("gemini-2.5-flash") == Limits(7, 250_000, 20)
    assert table.for_model("gemini-2.5-pro") == Limits(50, 250_000, 0)
    assert table.for_model("other") == Limits(50, 500, None)
    assert LimitTable.build().for_model("x").empty


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tier": "gemini-platinum"}, "unknown tier 'gemini-platinum'"),
        ({"rpm": 0}, "--rpm must be at least 1"),
        ({"tpm": -5}, "--tpm must be at least 1"),
    ],
)
def test_bad_limits_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LimitTable.build(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["m"]\nrpm = 0\n', r"rpm must be an integer >= 1, got 0"),
        ('["m"]\nrps = 3\n', r"unknown key\(s\) \['rps'\]"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_limits_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "l.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        LimitTable.build(limits_file=path)
    assert str(path) in str(info.value)
