"""The package's layout: each module small enough to read whole (split by meaning past that)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "batcher"
MOST_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {str(p): n for p, n in sizes.items() if n > MOST_LINES} == {}
