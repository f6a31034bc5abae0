"""``batcher mock-server``: serve the mock provider on loopback, with the limits and faults asked
for."""

from __future__ import annotations

import argparse
import math

from .._config.quota_options import LimitOptions
from .._core.errors import UsageError
from ..mock import Faults, MockConfig, MockServer
from .exits import EXIT_OK
from .flags import group_from_args

__all__ = ["mock_server_command"]


def mock_server_command(args: argparse.Namespace) -> int:
    """Serve until interrupted, having printed the base URL to point a run at."""
    limits = group_from_args(LimitOptions, args).table()
    try:
        faults = Faults(
            args.fail_500, args.fail_503, args.drop, args.truncate, args.slow, args.slow_ms
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 0 <= args.batch_delay < math.inf:
        raise UsageError(f"--batch-delay must be 0 or more seconds, got {args.batch_delay}")
    if not 0 < args.openai_window <= 60:
        raise UsageError(
            f"--openai-window must be more than 0 and at most 60, got {args.openai_window}"
        )
    if not 0 < args.token_scale <= 100:
        raise UsageError(
            f"--token-scale must be more than 0 and at most 100, got {args.token_scale}"
        )
    config = MockConfig(
        latency_ms=_latency(args.latency_ms),
        seed=args.seed,
        limits=limits,
        faults=faults,
        openai_per_second=not args.openai_per_minute,
        openai_window=args.openai_window,
        token_scale=args.token_scale,
        batch_delay=args.batch_delay,
        batch_gradual=args.batch_gradual,
        file_ttl=args.file_ttl,
        file_processing=args.file_processing,
    )
    server = MockServer(config, port=args.port)
    print(f"mock provider on {server.url}; base URL {server.base_url(args.provider)}", flush=True)
    server.serve_forever()
    return EXIT_OK


def _latency(text: str) -> tuple[float, float]:
    try:
        lo, _, hi = text.partition("-")
        low, high = float(lo), float(hi or lo)
    except ValueError:
        raise UsageError(f"--latency-ms takes MS or MIN-MAX, not {text!r}") from None
    if low < 0 or high < low:
        raise UsageError(f"--latency-ms {text!r}: need 0 <= MIN <= MAX")
    return low, high
