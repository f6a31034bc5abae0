"""Small command-line courtesies: --version, a flag's closest match, the schema's module form."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher import SchemaError
from batcher._cli.main import main
from batcher._cli.parser import batcher_version
from batcher._config.schema import load_schema


def test_version_prints_the_installed_version_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"batcher {batcher_version()}"


def test_a_mistyped_flag_gets_the_commands_closest_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "a.jsonl", "--out", "o", "--max-concurency", "4"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --max-concurency 4 (did you mean --max-concurrency?)" in err
    assert err.startswith("usage: batcher run")


def test_a_python_file_as_schema_points_at_the_module_form(tmp_path: Path) -> None:
    model = tmp_path / "tickets_model.py"
    model.write_text("from pydantic import BaseModel\n\nclass Ticket(BaseModel):\n    x: int\n")
    with pytest.raises(SchemaError, match=r"is not JSON .*package\.module:Model"):
        load_schema(str(model))
