"""Embeddings packed many to a request against one input a request, under a tier whose RPM would
bind: inputs embedded per minute, side by side in one run against one mock provider.

Each case drives ``batcher bench``'s load (texts of 12 to 36 words, through the same ``Runner`` as
``batcher run``) for ``--seconds`` against a ``batcher mock-server`` in its own process enforcing
the tier (20-200 ms latency), once packed (``--endpoint embeddings``, as a run sends them) and
once with packs of one input (the wire's ``max_inputs`` set to 1 for that case: what a client
without packing sends). The cases alternate, twice each; the figure is the inputs per minute of
each and their ratio. Packed, the TPM binds instead of the RPM: the lanes pace by tokens.

    python benchmarks/embeddings.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import anyio
import httpx
from _common import mock_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batcher._cli.bench import BenchResult, run_bench
from batcher._config.limits import load_tiers
from batcher._config.quota_options import LimitOptions
from batcher._wire.providers._embeddings import GeminiEmbeddings, OpenAIEmbeddings

CASES = (
    ("openai", "openai-tier1", "text-embedding-3-small", OpenAIEmbeddings, "/v1"),
    ("gemini", "gemini-tier1", "gemini-embedding-001", GeminiEmbeddings, "/v1beta"),
)


def one(
    provider: str, tier: str, model: str, url: str, seconds: float, wire: type, packed: bool
) -> BenchResult:
    """One case's bench: packed as a run packs, or one input a request."""
    limits = LimitOptions(tier=tier).table()
    options = {
        "provider": provider,
        "tier": tier,
        "base_url": url,
        "api": "embeddings",
        "dimensions": 8,
    }
    kept = wire.max_inputs
    if not packed:
        wire.max_inputs = 1
    try:
        return anyio.run(
            lambda: run_bench(limits=limits, model=model, seconds=seconds, options=options),
            backend="asyncio",
        )
    finally:
        wire.max_inputs = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    os.environ.setdefault("GEMINI_API_KEY", "g-bench")
    print(f"tiers: {load_tiers()[0]}")
    print(f"{'case':<36} {'limits':<26} {'packed':>14} {'one a request':>14} {'ratio':>7}")
    for provider, tier, model, wire, path in CASES:
        with mock_server("--tier", tier, "--latency-ms", "20-200") as mock:
            rates: dict[bool, list[float]] = {True: [], False: []}
            shares: dict[bool, list[float]] = {True: [], False: []}
            for packed in (True, False, True, False):
                httpx.post(f"{mock.url}/admin/reset")
                result = one(provider, tier, model, mock.url + path, args.seconds, wire, packed)
                assert result.inputs is not None
                rates[packed].append(result.inputs / result.seconds * 60)
                shares[packed].append(result.share_429)
            lim = LimitOptions(tier=tier).table().for_model(model)
            with_packs = statistics.fmean(rates[True])
            alone = statistics.fmean(rates[False])
            print(
                f"{provider + ' ' + model:<36} {lim.describe():<26} {with_packs:>14,.0f}"
                f" {alone:>14,.0f} {with_packs / alone:>7.1f}"
                f"  (429 share: {max(shares[True]):.2%} packed, {max(shares[False]):.2%} alone)"
            )


if __name__ == "__main__":
    main()
