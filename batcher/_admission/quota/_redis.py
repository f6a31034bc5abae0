"""The shared quota store across machines: the same leases and day counts, in Redis.

Leases are a sorted set per (account, model), scored by expiry; the day's counts are a hash per
quota day, field ``account:model``, and change only inside Lua scripts, which Redis runs
atomically, so two machines never both take the last requests of a day. Keys of past days
expire after two days.

A server that is down or not answering (within ``TIMEOUT``) makes every call raise
``StoreUnreachable``: the lanes then hold and ask again (``SharedQuota``), and the client
reconnects by itself once the server is back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..._core.errors import UsageError
from ._base import Account, Spent, StoreUnreachable

T = TypeVar("T")

__all__ = ["RedisStore"]

PREFIX = "batcher:"
DAY_KEPT = 2 * 86_400
TIMEOUT = 5.0
"""Seconds a connection or a call may take: a server that hangs is as unreachable as one that
refuses, and must not hang the lanes waiting on it."""

# KEYS[1] the day's hash; ARGV: field, want, limit (-1: none), expiry seconds
_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local want, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local granted = want
if limit >= 0 then granted = math.max(0, math.min(want, limit - spent)) end
if granted > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], granted) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return granted
"""
_GIVE_BACK = """
local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HSET', KEYS[1], ARGV[1], math.max(0, spent - tonumber(ARGV[2])))
return 0
"""


def shown(url: str) -> str:
    """``url`` as messages show it: without a user, a password or a query (which may hold one)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))


class RedisStore:
    """Budgets in the Redis database at ``url`` (``redis://HOST:PORT/DB``)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.where = shown(url)
        try:
            self._redis: Any = aioredis.Redis.from_url(
                url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
        except ValueError as e:
            raise UsageError(f"--quota-store {self.where}: {e}") from None
        self._reserve = self._redis.register_script(_RESERVE)
        self._give_back = self._redis.register_script(_GIVE_BACK)
        self._joined: dict[str, set[str]] = {}  # holder -> its lease keys, for ``leave``

    async def check(self) -> None:
        """Raise ``UsageError`` if the server cannot be reached."""
        import redis

        try:
            await self._redis.ping()
        except (redis.RedisError, OSError) as e:
            raise UsageError(f"cannot reach the quota store {self.where}: {e}") from None

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call``'s answer; ``StoreUnreachable`` if the server cannot give it."""
        import redis

        try:
            return await call()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnreachable(str(e) or type(e).__name__) from e

    async def join(
        self, account: Account, model: str, holder: str, *, active: bool, ttl: float, now: float
    ) -> int:
        return await self._ask(lambda: self._join(account, model, holder, active, ttl, now))

    async def _join(
        self, account: Account, model: str, holder: str, active: bool, ttl: float, now: float
    ) -> int:
        key = f"{PREFIX}lease:{account.id}:{model}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", f"({now}")
            if active:
                pipe.zadd(key, {holder: now + ttl})
                self._joined.setdefault(holder, set()).add(key)
            else:
                pipe.zrem(key, holder)
            pipe.zcard(key)
            pipe.expire(key, max(1, int(ttl * 10)))
            results = await pipe.execute()
        return int(results[-2])

    async def reserve(
        self, account: Account, model: str, day: str, want: int, limit: int | None
    ) -> int:
        return await self._ask(lambda: self._reserve_in(account, model, day, want, limit))

    async def _reserve_in(
        self, account: Account, model: str, day: str, want: int, limit: int | None
    ) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(f"{PREFIX}labels", account.id, account.label)
            pipe.hset(f"{PREFIX}seen", account.id, repr(time.time()))
            await pipe.execute()
        granted = await self._reserve(
            keys=[f"{PREFIX}day:{day}"],
            args=[f"{account.id}:{model}", want, -1 if limit is None else limit, DAY_KEPT],
        )
        return int(granted)

    async def give_back(self, account: Account, model: str, day: str, n: int) -> None:
        await self._ask(
            lambda: self._give_back(keys=[f"{PREFIX}day:{day}"], args=[f"{account.id}:{model}", n])
        )

    async def leave(self, holder: str) -> None:
        keys = self._joined.pop(holder, set())
        if keys:

            async def leave() -> None:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.zrem(key, holder)
                    await pipe.execute()

            await self._ask(leave)

    async def spent(self, day: str) -> list[Spent]:
        counts = await self._ask(lambda: self._redis.hgetall(f"{PREFIX}day:{day}"))
        labels = await self._ask(lambda: self._redis.hgetall(f"{PREFIX}labels"))
        seen = await self._ask(lambda: self._redis.hgetall(f"{PREFIX}seen"))
        out = []
        for field, n in counts.items():
            account, _, model = field.decode().partition(":")
            label = labels.get(account.encode())
            when = seen.get(account.encode())
            out.append(
                Spent(
                    label.decode() if label else account,
                    model,
                    int(n),
                    float(when) if when else None,
                )
            )
        return sorted(out, key=lambda s: (s.label, s.model))

    async def aclose(self) -> None:
        await self._redis.aclose()
