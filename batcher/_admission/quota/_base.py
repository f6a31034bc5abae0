"""What every quota store keeps, and the one interface they share.

A budget belongs to an account: a provider project named in a pool file, or else an API key at
one base URL. Stores know an account only by ``Account.id``, a hash (never the key), and show
``Account.label`` in ``batcher status``: the project, or the key's variable, a fingerprint of the
key (so two keys read from one variable are told apart) and the host. Per (account, model) a
store keeps two things:

- leases: which processes are sending now. A process renews its lease every second or so
  (``join``); a lease not renewed within its ``ttl`` lapses, so a process that dies stops
  holding a share of the per-minute limits a few seconds later. Each live holder with demand
  paces at ``1 / holders`` of the limits, so together they stay under them.
- the day's count: requests reserved per quota day (``reserve``), granted in small blocks that
  the process spends locally, never beyond the daily limit; what is left of a block is given
  back at the end (``give_back``). A process killed holding a block loses at most that block
  (the count errs high, never low).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

__all__ = ["Account", "QuotaStore", "Spent", "StoreUnreachable"]

FINGERPRINT = 6
"""Hex digits of the key's hash in a label: enough to tell a machine's keys apart, far too few
to test a guessed key against."""


class StoreUnreachable(Exception):
    """The store could not be asked (its server is down or not answering): the caller waits and
    asks again, it never guesses the answer."""


@dataclass(frozen=True, slots=True)
class Account:
    """Whose budget: ``id`` is a hash of the project (or of the key and its base URL);
    ``label`` names it for people, without the key."""

    id: str
    label: str

    @classmethod
    def of_project(cls, provider: str, project: str) -> Account:
        return cls(_hash("project", provider, project), f"project {project}")

    @classmethod
    def of_key(cls, base_url: str, key: str, key_source: str) -> Account:
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT]
        host = urlsplit(base_url).netloc.rpartition("@")[2] or base_url
        return cls(_hash("key", base_url, key), f"key {key_source} #{fingerprint} at {host}")


def _hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Spent:
    """Requests counted for one account and model in one quota day."""

    label: str
    model: str
    count: int
    seen: float | None = None
    """When a run last reserved on the account (wall clock); None in a store written before
    this was kept."""


class QuotaStore(Protocol):
    """Shared budgets: leases on the per-minute limits and the day's count, per (account, model).

    ``now`` is wall-clock time (leases are compared across processes and machines). Every
    method is safe to call from several processes at once, and raises ``StoreUnreachable`` when
    the store cannot be asked.
    """

    where: str
    """The store in words, for messages."""

    async def join(
        self, account: Account, model: str, holder: str, *, active: bool, ttl: float, now: float
    ) -> int:
        """Renew (``active``) or drop ``holder``'s lease; return how many live leases there are
        (``holder``'s included when ``active``)."""
        ...

    async def reserve(
        self, account: Account, model: str, day: str, want: int, limit: int | None
    ) -> int:
        """Count up to ``want`` more requests in ``day``, never past ``limit``; return how many
        were granted (0 when the day's quota is spent). Notes the account as seen now."""
        ...

    async def give_back(self, account: Account, model: str, day: str, n: int) -> None:
        """Uncount ``n`` requests reserved in ``day`` and not sent."""
        ...

    async def leave(self, holder: str) -> None:
        """Drop every lease of ``holder`` (a clean end)."""
        ...

    async def spent(self, day: str) -> list[Spent]:
        """What all runs counted in ``day``, per account and model."""
        ...

    async def aclose(self) -> None: ...
