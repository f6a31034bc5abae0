"""Rate limits: the tier presets (a data file) and how a model's limits are resolved.

A model's limits come from, most specific last: the tier preset, the ``--rpm/--tpm/--rpd`` flags
(for every model), and a ``--limits`` TOML file (per model). What the server's headers reveal is
adopted at run time by the lane (see ``_admission.lane``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .._core.errors import UsageError
from .._jobs import ProviderName

__all__ = ["LimitTable", "Limits", "Tier", "describe_tiers", "load_tiers"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests per minute, tokens per minute, requests per quota day; None means no limit."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None

    def over(self, base: Limits) -> Limits:
        """These limits where set, ``base``'s elsewhere."""
        return Limits(
            *(
                getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(base, f.name)
                for f in fields(self)
            )
        )

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.rpd is None

    def describe(self) -> str:
        parts = [
            f"{v:,} {k.upper()}"
            for k, v in (("rpm", self.rpm), ("tpm", self.tpm), ("rpd", self.rpd))
            if v is not None
        ]
        return ", ".join(parts) or "no limits"


def _plain(limits: Limits) -> dict[str, int]:
    return {f.name: getattr(limits, f.name) for f in fields(limits) if getattr(limits, f.name)}


@dataclass(frozen=True, slots=True)
class Tier:
    """A named preset: the provider it belongs to and each model's limits."""

    name: str
    provider: ProviderName
    models: dict[str, Limits]


def _limits(raw: Any, where: str, *, allow_zero: bool) -> Limits:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a table of rpm / tpm / rpd")
    unknown = set(raw) - {"rpm", "tpm", "rpd"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {sorted(unknown)}; use rpm, tpm, rpd")
    for k, v in raw.items():
        low = 0 if allow_zero else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise UsageError(f"{where}: {k} must be an integer >= {low}, got {v!r}")
    return Limits(**raw)


@cache
def load_tiers() -> tuple[str, str, dict[str, Tier]]:
    """(date, source, tiers by name) from the packaged ``tiers.toml``."""
    data = tomllib.loads(resources.files("batcher._config").joinpath("tiers.toml").read_text())
    tiers = {
        name: Tier(
            name,
            t["provider"],
            {
                m: _limits(v, f"tiers.toml {name} {m}", allow_zero=True)
                for m, v in t["models"].items()
            },
        )
        for name, t in data["tiers"].items()
    }
    return data["date"], data["source"], tiers


def describe_tiers() -> list[str]:
    """The presets as ``batcher tiers`` prints them."""
    day, source, tiers = load_tiers()
    out = [f"Tier presets of {day} (source: {source}); RPM / TPM / RPD, '-' for none:"]
    for tier in tiers.values():
        out.append(f"\n{tier.name} ({tier.provider})")
        for model, lim in tier.models.items():
            cells = [f"{v:,}" if v is not None else "-" for v in (lim.rpm, lim.tpm, lim.rpd)]
            out.append(f"  {model:<24} {' / '.join(cells)}")
    return out


def read_limits_file(path: Path) -> dict[str, Limits]:
    """A ``--limits`` TOML file: a table per model, ``["gemini-2.5-flash"] rpm = 10 ...``."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--limits {path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--limits {path}: not valid TOML: {e}") from None
    models = data.get("models", data)
    if not isinstance(models, dict):
        raise UsageError(f"--limits {path}: 'models' must be a table of models")
    return {m: _limits(v, f"--limits {path} [{m}]", allow_zero=False) for m, v in models.items()}


@dataclass(frozen=True, slots=True)
class LimitTable:
    """Every model's configured limits for one run."""

    tier: Tier | None = None
    everywhere: Limits = Limits()
    per_model: dict[str, Limits] | None = None

    @classmethod
    def build(
        cls,
        *,
        tier: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        limits_file: str | Path | None = None,
    ) -> LimitTable:
        """Resolve the options into a table; bad values are ``UsageError``s."""
        preset = None
        if tier is not None:
            tiers = load_tiers()[2]
            if tier not in tiers:
                raise UsageError(f"unknown tier {tier!r}; choose one of {', '.join(tiers)}")
            preset = tiers[tier]
        flags = {"rpm": rpm, "tpm": tpm, "rpd": rpd}
        for k, v in flags.items():
            if v is not None and v < 1:
                raise UsageError(f"--{k} must be at least 1, got {v}")
        per_model = read_limits_file(Path(limits_file)) if limits_file is not None else None
        return cls(preset, Limits(**flags), per_model)

    def to_json(self) -> dict[str, Any]:
        """The table as resolved, for ``run.json``: the tier by name, the limits as numbers."""
        return {
            "tier": self.tier.name if self.tier else None,
            "everywhere": _plain(self.everywhere),
            "per_model": {m: _plain(v) for m, v in (self.per_model or {}).items()},
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> LimitTable:
        """Read ``to_json``'s form back; bad values are ``UsageError``s naming ``where``."""
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a table of limits")
        tier = None
        if data.get("tier") is not None:
            tiers = load_tiers()[2]
            if data["tier"] not in tiers:
                raise UsageError(f"{where}: unknown tier {data['tier']!r}")
            tier = tiers[data["tier"]]
        per_model = data.get("per_model") or {}
        if not isinstance(per_model, dict):
            raise UsageError(f"{where}: per_model must be a table")
        return cls(
            tier,
            _limits(data.get("everywhere") or {}, where, allow_zero=False),
            {m: _limits(v, f"{where} [{m}]", allow_zero=False) for m, v in per_model.items()}
            or None,
        )

    def under(self, base: Limits) -> LimitTable:
        """This table with ``base`` beneath it: a limit a model gets from none of the tier, the
        limits for every model and its own is ``base``'s (a pool's ``--rpm/--tpm/--rpd`` beneath
        an endpoint's own). The tier's models and the per-model entries are stored resolved, so
        that ``base`` stays beneath the tier, which the limits for every model are over."""
        if base.empty:
            return self
        models = set(self.per_model or ()) | set(self.tier.models if self.tier else ())
        per_model = {m: self.for_model(m).over(base) for m in sorted(models)}
        return LimitTable(self.tier, self.everywhere.over(base), per_model or None)

    def for_model(self, model: str) -> Limits:
        base = self.tier.models.get(model, Limits()) if self.tier else Limits()
        limits = self.everywhere.over(base)
        if self.per_model and model in self.per_model:
            limits = self.per_model[model].over(limits)
        return limits
