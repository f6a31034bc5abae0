"""A batch input file uploaded by a run that stopped before creating its batch: a rerun names it
again while it lives, and uploads it again once it has expired or is about to (Gemini keeps a file
48 hours), or when the provider answers that it no longer has it. On the virtual clock: a rerun
"days later" is the mock's clock moved on, no wall-clock wait."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batcher._engine.batch_chunks import FILE_MARGIN
from batcher._wire.providers._gemini_batch import GeminiBatch
from batcher._wire.providers._openai_batch import OpenAIBatch
from batcher.mock import MockConfig, create_app
from tests.helpers import read_results
from tests.test_batchapi import Crash, _jobs, _virtual_run
from tests.virtual import VirtualClock

HOUR = 3600.0


def _uploaded(out: Path) -> list[dict[str, Any]]:
    """The ``uploaded`` events of ``out``'s batches.jsonl, in order."""
    events = [json.loads(line) for line in (out / "batches.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "uploaded"]


def _rerun_later(
    tmp_path: Path, provider: str, later: float, ttl: float = 48 * HOUR
) -> tuple[Any, Path]:
    """A run of 3 jobs (one batch, sent as a file) that stops once its file is uploaded, then a
    rerun ``later`` seconds after, against a mock that keeps files ``ttl`` seconds."""
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=60.0, file_ttl=ttl), clock=clock.time)
    options: dict[str, Any] = {"poll_interval": 60.0}
    if provider == "gemini":
        options["base_url"] = "http://mock.test/v1beta"
    options["provider"] = provider
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, app, clock, crash_at="uploaded", **options)
    assert not app.state.batch_creates and len(_uploaded(tmp_path / "out")) == 1
    clock.start += later
    summary = _virtual_run(tmp_path, jobs, app, clock, **options)
    assert summary.ok == 3 and set(read_results(tmp_path / "out")) == {"j0", "j1", "j2"}
    return app, tmp_path / "out"


@pytest.fixture(autouse=True)
def _as_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GeminiBatch, "inline_requests", 1)  # 3 jobs: a file, not inline


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_a_file_that_still_lives_is_named_again(tmp_path: Path, provider: str) -> None:
    app, out = _rerun_later(tmp_path, provider, 47 * HOUR - FILE_MARGIN - 1)
    [first] = _uploaded(out)
    assert first["expires"] == pytest.approx(first["at"] + 48 * HOUR)
    [batch] = app.pipeline.batches.batches.values()
    assert batch.input_file_id == first["file"]


@pytest.mark.parametrize("provider", ["gemini", "openai"])
@pytest.mark.parametrize("later", [49 * HOUR, 48 * HOUR - FILE_MARGIN / 2])
def test_a_file_expired_or_about_to_is_uploaded_again(
    tmp_path: Path, provider: str, later: float
) -> None:
    app, out = _rerun_later(tmp_path, provider, later)
    first, again = _uploaded(out)
    assert again["file"] != first["file"] and again["at"] >= first["at"] + later
    [batch] = app.pipeline.batches.batches.values()
    assert batch.input_file_id == again["file"]  # the batch names the new file
    assert app.state.batch_lines == 3


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_a_file_the_provider_no_longer_has_is_uploaded_again(
    tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider said no expiry (or an earlier version did not record it), and the file is
    gone when the rerun names it: the create call's refusal sends it again, once."""
    monkeypatch.setattr(OpenAIBatch, "max_requests", 3)
    real = (GeminiBatch if provider == "gemini" else OpenAIBatch).upload

    async def without_expiry(self: Any, *args: Any) -> Any:
        uploaded = await real(self, *args)
        return None if uploaded is None else type(uploaded)(uploaded.ref, uploaded.name, None)

    monkeypatch.setattr(
        GeminiBatch if provider == "gemini" else OpenAIBatch, "upload", without_expiry
    )
    app, out = _rerun_later(tmp_path, provider, 2 * HOUR, ttl=HOUR)
    first, again = _uploaded(out)
    assert first["expires"] is None and again["file"] != first["file"]
    [batch] = app.pipeline.batches.batches.values()
    assert batch.input_file_id == again["file"]
