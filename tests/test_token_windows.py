"""TPM from the very first request: a run against the mock enforcing its token limit per clock
10 s (as Azure OpenAI may), with a tokenizer the estimator has not learned yet, in virtual time.

The lane caps tokens over any 10 s at that part of the limit (pacing alone lets a second's
tokens ahead into a window), and charges each request its estimate plus the estimator's doubt
until answers have said how far estimates fall short (a slow start on tokens)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from batcher import Runner, RunOptions
from batcher._config.limits import LimitTable
from batcher.mock import MockConfig, create_app
from tests.virtual import VirtualClock, run_virtual

ENGLISH = (
    "Rate limits are enforced per model and per minute, so a batch runner has to pace its "
    "requests evenly instead of sending them all at once and sleeping afterwards. "
)
CJK = "速率限制按模型和分钟执行，因此批处理程序必须均匀地安排请求，而不是一次全部发送。"
TPM = 60_000


def _run(
    out: Path, n: int, scale: float, latency: tuple[float, float], window: float = 10.0
) -> dict[str, Any]:
    """``n`` jobs of English and Chinese (the mock counts them at about 1.6x chars/4, times
    ``scale``) at 60,000 TPM enforced per clock ``window`` seconds; the mock's counters after
    the run."""
    rng = random.Random(7)
    prompts = [ENGLISH * rng.randint(1, 4) + CJK * rng.randint(0, 4) for _ in range(n)]
    jobs = [{"id": f"j{i}", "prompt": p} for i, p in enumerate(prompts)]
    clock = VirtualClock()  # starts on a whole 10 s: the first window is a whole one
    limits = LimitTable.build(tpm=TPM, rpm=100_000)
    config = MockConfig(latency_ms=latency, limits=limits, openai_window=window, token_scale=scale)
    app = create_app(config, clock=clock.time)

    async def main() -> dict[str, Any]:
        opts = RunOptions(api_key="k", model="m", base_url="http://mock/v1", tpm=TPM, rpm=100_000)
        transport = httpx.ASGITransport(app=app)
        async with Runner(jobs, out, opts, clock=clock, transport=transport) as runner:
            summary = await runner.run()
            assert (summary.ok, summary.exit_code) == (n, 0)
        async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
            stats: dict[str, Any] = (await client.get("/admin/stats")).json()
            return stats

    return run_virtual(main)


@pytest.mark.parametrize(
    ("scale", "latency"),
    [
        (1.0, (20.0, 200.0)),  # the mock's own tokenizer: 1.07x the starting estimate
        (1.6, (20.0, 200.0)),  # 1.7x the starting estimate
        (1.6, (2_000.0, 4_000.0)),  # and answers slow to teach it
    ],
)
def test_tokens_per_10_s_window_get_no_429_from_the_first_request(
    tmp_path: Path, scale: float, latency: tuple[float, float]
) -> None:
    stats = _run(tmp_path, 250, scale, latency)
    accepted, rejected = stats["accepted"], stats["rejected"]
    assert accepted == 250
    assert rejected / (accepted + rejected) <= 0.005, rejected
    # the tokens the server admitted per minute, over the limit (a 250-job run is under a
    # minute or two: the one second of tokens pacing lets ahead shows as a little over 1)
    minutes = (stats["last_admitted"] - stats["first_admitted"]) / 60
    efficiency = stats["input_tokens"] * (accepted - 1) / accepted / minutes / TPM
    assert efficiency >= 0.95, efficiency


def _efficiency(stats: dict[str, Any]) -> float:
    """The tokens the server admitted per minute, over the limit."""
    accepted = stats["accepted"]
    minutes = (stats["last_admitted"] - stats["first_admitted"]) / 60
    return float(stats["input_tokens"] * (accepted - 1) / accepted / minutes / TPM)


def test_tokens_per_second_fill_seconds_a_first_come_first_served_order_leaves_part_empty(
    tmp_path: Path,
) -> None:
    """OpenAI's quantum: 1,000 tokens a clock second. These prompts (44 to 336 tokens) packed
    in order into seconds of 1,000 fill 0.89 of them at best; the lane lets a smaller request
    queued behind fill what the one ahead of it leaves (``Lane._fill``)."""
    stats = _run(tmp_path, 400, 1.0, (20.0, 200.0), window=1.0)
    accepted, rejected = stats["accepted"], stats["rejected"]
    assert accepted == 400
    assert rejected / (accepted + rejected) <= 0.01, rejected
    assert _efficiency(stats) >= 0.91
