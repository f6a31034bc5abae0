"""Prices as data: the packaged ``prices.toml`` (a ``--prices`` file over it), and what tokens cost.

A price is US dollars per million tokens. ``Prices.cost`` is the one place a cost is computed: the
executor prices each result row with it, ``plan`` its estimates, ``--budget`` its worst cases, and
the batch executor its half-price lines (``batch=True``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .._core.errors import UsageError

__all__ = ["Price", "Prices", "load_prices", "usd"]

MILLION = 1_000_000


def usd(dollars: float) -> str:
    """Dollars for people: cents above a dollar, four significant digits below (``$0.0001234``)."""
    if dollars == 0 or abs(dollars) >= 1:
        return f"${dollars:,.2f}"
    decimals = min(12, 3 - math.floor(math.log10(abs(dollars))))
    return "$" + f"{dollars:.{decimals}f}".rstrip("0")


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices per million tokens, and the share of them its batch API charges."""

    input: float
    output: float
    cached_input: float | None = None
    """Prompt tokens served from the provider's cache; charged as ``input`` when unknown."""
    thinking: float | None = None
    """Reasoning tokens billed apart from the output; charged as ``output`` when unknown."""
    batch: float = 1.0

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        thinking_tokens: int = 0,
        batch: bool = False,
    ) -> float:
        """Dollars for these tokens. ``cached_tokens`` are the part of ``input_tokens`` read from
        a cache; ``thinking_tokens`` come on top of ``output_tokens`` (both providers count them
        inside the output, so callers that have only the answer's usage pass 0)."""
        cached = min(cached_tokens, input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        thinking_price = self.output if self.thinking is None else self.thinking
        dollars = (
            (input_tokens - cached) * self.input
            + cached * cached_price
            + output_tokens * self.output
            + thinking_tokens * thinking_price
        ) / MILLION
        return dollars * self.batch if batch else dollars


@dataclass(frozen=True, slots=True)
class Prices:
    """Every known model's price, and where each provider's prices come from."""

    models: dict[str, Price]
    sources: dict[str, tuple[str, str]]
    """Provider -> (date read, source URL)."""
    _found: dict[str, Price | None] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """``price`` answers already given (it runs twice for every answer)."""

    def price(self, model: str | None) -> Price | None:
        """The price of ``model``, or of the longest known name it extends with a version suffix
        (``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``); None if unknown."""
        if model is None:
            return None
        if model in self._found:
            return self._found[model]
        name = model.removeprefix("models/")
        known = [m for m in self.models if name.startswith(m + "-") or name == m]
        found = self._found[model] = self.models[max(known, key=len)] if known else None
        return found

    def cost(
        self,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        *,
        batch: bool = False,
    ) -> float | None:
        """Dollars for one answer's tokens; None if the model has no known price."""
        price = self.price(model)
        if price is None:
            return None
        return price.cost(input_tokens or 0, output_tokens or 0, batch=batch)

    def describe(self) -> list[str]:
        """The table as ``batcher prices`` would print it: per model, $ per million tokens."""
        out = [f"{'model':<24} {'input':>8} {'output':>8}  (USD per million tokens)"]
        for model, p in sorted(self.models.items()):
            out.append(f"{model:<24} {p.input:>8.3f} {p.output:>8.3f}")
        out += [f"{provider}: {day}, {src}" for provider, (day, src) in self.sources.items()]
        return out


_PRICE_KEYS = {"input", "output", "cached_input", "thinking"}


def _number(raw: Any, where: str, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise UsageError(f"{where} must be a number from {low:g} to {high:g}, got {raw!r}")
    return float(raw)


def _price(raw: Any, where: str, batch: float) -> Price:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a table of input / output prices")
    unknown = set(raw) - _PRICE_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {sorted(unknown)}; use {sorted(_PRICE_KEYS)}")
    for key in ("input", "output"):
        if key not in raw:
            raise UsageError(f"{where}: {key} is missing")
    values = {k: _number(v, f"{where} {k}") for k, v in raw.items()}
    return Price(**values, batch=batch)


def _parse(data: dict[str, Any], name: str, *, packaged: bool) -> Prices:
    models: dict[str, Price] = {}
    sources: dict[str, tuple[str, str]] = {}
    for provider, table in data.items():
        where = f"{name} [{provider}]"
        if not isinstance(table, dict):
            raise UsageError(f"{where}: expected a table with date, source, batch and models")
        unknown = set(table) - {"date", "source", "batch", "models"}
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {sorted(unknown)}")
        batch = _number(table.get("batch", 1.0), f"{where} batch", high=1.0)
        for key in ("date", "source"):
            if key in table and not isinstance(table[key], str):
                raise UsageError(f"{where} {key} must be a string")
            if packaged and key not in table:
                raise UsageError(f"{where}: {key} is missing")
        sources[provider] = (table.get("date", "?"), table.get("source", name))
        rows = table.get("models", {})
        if not isinstance(rows, dict):
            raise UsageError(f"{where} models must be a table of models")
        for model, raw in rows.items():
            models[model] = _price(raw, f"{where} models.{model!r}", batch)
    return Prices(models, sources)


@cache
def _packaged() -> Prices:
    text = resources.files("batcher._config").joinpath("prices.toml").read_text()
    return _parse(tomllib.loads(text), "prices.toml", packaged=True)


def load_prices(path: str | Path | None = None) -> Prices:
    """The packaged prices, with a ``--prices`` file's models and sources over them. A bad file
    is a ``UsageError`` naming the file and the field."""
    base = _packaged()
    if path is None:
        return base
    where = f"--prices {path}"
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"{where}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{where}: not valid TOML: {e}") from None
    extra = _parse(data, where, packaged=False)
    return Prices({**base.models, **extra.models}, {**base.sources, **extra.sources})
