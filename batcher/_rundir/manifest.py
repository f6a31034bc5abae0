"""``DIR/run.json``: what a run directory holds, written by ``run`` and read by ``status``.

It pins the provider and default model (a rerun with others would mix their results), records how
many jobs the inputs hold, and stores the limits as they were resolved, so ``status`` reads them
from here instead of re-reading a ``--limits`` file relative to wherever it is run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config.limits import Limits, LimitTable
from .._core.errors import DamagedFile, UsageError, WriteFailed

__all__ = ["Manifest"]

NAME = "run.json"


@dataclass(frozen=True, slots=True)
class Manifest:
    """The facts of one run directory."""

    provider: str
    model: str | None
    base_url: str
    """The endpoint's URL, or ``"mock"`` for the embedded mock provider."""
    total: int
    inputs: tuple[str, ...] = ()
    quota_day: str = "pacific"
    limits: LimitTable = field(default_factory=LimitTable)
    schema: dict[str, Any] | None = None
    """The output schema (``OutputSchema.to_json``), so a rerun stores ``parsed`` in one type."""
    endpoints: dict[str, LimitTable] = field(default_factory=dict)
    """A pool's limits, by endpoint name, as resolved from the pool file (``batcher report``)."""

    @staticmethod
    def path(out: Path) -> Path:
        return out / NAME

    @classmethod
    def read(cls, out: Path) -> Manifest | None:
        """The manifest in ``out``, None if there is none; ``DamagedFile`` if it is unreadable."""
        path = cls.path(out)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls._parse(data, path)
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            UsageError,
            RecursionError,
            ArithmeticError,
        ) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise DamagedFile(path, reason or type(e).__name__) from None

    @classmethod
    def _parse(cls, data: dict[str, Any], path: Path) -> Manifest:
        if "limits" in data:
            limits = LimitTable.from_json(data["limits"], str(path))
        else:  # written before the limits were stored resolved: rebuild them, best effort
            flags = {k: data.get(k) for k in ("rpm", "tpm", "rpd")}
            limits = LimitTable.from_json(
                {"tier": data.get("tier"), "everywhere": {k: v for k, v in flags.items() if v}},
                str(path),
            )
        return cls(
            provider=str(data["provider"]),
            model=data.get("model"),
            base_url=str(data.get("base_url", "")),
            total=int(data["total"]),
            inputs=tuple(str(p) for p in data.get("inputs", ())),
            quota_day=str(data.get("quota_day", "pacific")),
            limits=limits,
            schema=dict(data["schema"]) if data.get("schema") is not None else None,
            endpoints={
                str(name): LimitTable.from_json(table, f"{path} endpoints.{name}")
                for name, table in dict(data.get("endpoints") or {}).items()
            },
        )

    def check_same_run(self, provider: str, model: str | None, out: Path) -> None:
        """Refuse another provider or default model: their results would mix in one directory."""
        for name, mine, theirs in (
            ("provider", self.provider, provider),
            ("model", self.model, model),
        ):
            if mine != theirs:
                raise UsageError(
                    f"{out} holds a run with --{name} {mine}, and this one asks for {theirs}; "
                    "their results would mix. Use another --out, or the same options."
                )

    def check_same_schema(self, schema: dict[str, Any] | None, out: Path, redo: bool) -> None:
        """Refuse another output schema (or none) over results of this one: the ``parsed``
        column would take two types. With ``redo`` (``--redo-changed``) every job is sent again
        with the new one, its request having changed."""
        mine = self.schema["schema"] if self.schema else None
        theirs = schema["schema"] if schema else None
        if mine == theirs or redo:
            return
        had = f"--schema {self.schema['source']}" if self.schema else "no --schema"
        asks = f"--schema {schema['source']}" if schema else "none"
        raise UsageError(
            f"{out} holds a run with {had}, and this one asks for {asks}; the 'parsed' column "
            "cannot take both. Pass the same schema, or --redo-changed to send every job again "
            "with this one, or use another --out."
        )

    def write(self, out: Path) -> None:
        """Replace ``run.json`` atomically."""
        data = {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "total": self.total,
            "inputs": list(self.inputs),
            "quota_day": self.quota_day,
            "limits": self.limits.to_json(),
        }
        if self.schema is not None:
            data["schema"] = self.schema
        if self.endpoints:
            data["endpoints"] = {name: t.to_json() for name, t in self.endpoints.items()}
        tmp = out / (NAME + ".tmp")
        try:
            out.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, self.path(out))
        except OSError as e:
            raise WriteFailed.from_os_error(e, self.path(out)) from None

    def limits_for(self, model: str, endpoint: str | None = None) -> Limits:
        """A model's limits: the run's own, or, named, a pool endpoint's (none if not known)."""
        if endpoint is None:
            return self.limits.for_model(model)
        table = self.endpoints.get(endpoint)
        return table.for_model(model) if table is not None else Limits()
