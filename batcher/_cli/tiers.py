"""``batcher tiers``: the tier presets, with each model's limits."""

from __future__ import annotations

import argparse

from .._config.limits import describe_tiers
from .exits import EXIT_OK

__all__ = ["tiers_command"]


def tiers_command(args: argparse.Namespace) -> int:
    """Print every tier preset (``tiers.toml``)."""
    print("\n".join(describe_tiers()))
    return EXIT_OK
