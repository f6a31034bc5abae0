"""The lean HTTP/1.1 client's connections (``http1``) and the pool that keeps them alive.

A ``Connection`` is one socket with at most one request on it, and one re-arming timer per
request for both the read timeout and the request's deadline. The ``ConnectionPool`` is a LIFO
pool of keep-alive connections bounded by the transport's ``max_connections``, with FIFO waiters.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .answer_caps import ProtocolError
from .http1_parser import ResponseParser

__all__ = ["Connection", "ConnectionPool"]


class _Stale(Exception):
    """The server closed the connection before sending a byte of the answer."""


class _Silence(Exception):
    """No progress (a byte of the answer, or of the request leaving) for the read timeout."""


class _Deadline(Exception):
    """The answer was not complete by the request's deadline, however steadily it came."""


class Connection(asyncio.Protocol):
    """One socket and the request on it, if any. ``holds_slot``: it counts toward the pool's
    limit (cleared once, when the slot is given back)."""

    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[ResponseParser] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout = 0.0
        self.deadline = 0.0  # loop time by which the answer must be complete
        self.last = 0.0  # loop time of the latest progress: a piece of the answer came
        self.unsent = 0  # bytes of the request still in the write buffer at the last check
        self.closed = False
        self.holds_slot = True
        self.idle_since = 0.0  # time.monotonic() when it last went back to the pool idle
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # nothing asked: a server talking out of turn
            self.abort()
            return
        self.last = self.loop.time()
        try:
            done = parser.feed(data)
        except ProtocolError as e:
            self._fail(e)
            return
        if done:
            self._resolve(parser)

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self.parser
        if parser is not None:
            try:
                complete = parser.eof()
            except ProtocolError as e:
                self._fail(e)
            else:
                if complete:
                    self._resolve(parser)
                elif not parser.received:
                    self._fail(_Stale(exc or "closed before answering"))
                else:
                    self._fail(exc or ConnectionError("closed before the answer was complete"))
        self.pool.forget(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(
        self, data: tuple[bytes, ...], silence: float, deadline: float, parser: ResponseParser
    ) -> ResponseParser:
        """Write one request (its pieces in order), wait for its whole answer: ``silence`` is
        the read timeout, ``deadline`` the most the whole answer may take."""
        assert self.transport is not None
        self.parser = parser
        waiter: asyncio.Future[ResponseParser] = self.loop.create_future()
        self.waiter = waiter
        self.timeout = silence
        self.last = self.loop.time()
        self.deadline = self.last + deadline
        self.timer = self.loop.call_at(min(self.last + silence, self.deadline), self._check)
        for piece in data:
            self.transport.write(piece)
        self.unsent = self.transport.get_write_buffer_size()  # 0 unless the body is large
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # seen: a cancellation raced its failure
            raise
        finally:
            self.timer.cancel()
            self.parser = self.waiter = None
            left = self.transport.get_write_buffer_size() if self.transport is not None else 0
            if not (parser.complete and parser.keep_alive) or left:
                # answered before the request had all left (a 413, a 401 to a large body): the
                # rest would reach the server as the start of the next request on it
                self.abort()

    def _check(self) -> None:
        """The read timeout's and deadline's timer: fail after ``timeout`` of silence or at the
        deadline, else wait for the nearer one. A large body still leaving (less of it buffered
        than at the last check) is progress too."""
        now = self.loop.time()
        if now >= self.deadline - 0.001:  # timers may fire a hair early
            self._fail(_Deadline())
            return
        if self.unsent and self.transport is not None:
            unsent = self.transport.get_write_buffer_size()
            if unsent < self.unsent:
                self.last = max(self.last, now)
            self.unsent = unsent
        deadline = self.last + self.timeout
        if now >= deadline - 0.001:
            self._fail(_Silence())
        else:
            self.timer = self.loop.call_at(min(deadline, self.deadline), self._check)

    def _resolve(self, parser: ResponseParser) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(parser)

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)


class ConnectionPool:
    """The keep-alive connections to one server, at most ``limit`` of them: ``take`` one (or a
    slot to open one), ``give`` it back, ``add`` one opened, ``forget`` one closed."""

    # An idle connection older than this is closed rather than reused (aiohttp's default too):
    # servers close theirs after 5-75 s, and a request sent as they do must be sent again.
    keepalive_expiry = 15.0

    def __init__(self, limit: int) -> None:
        self._limit = limit
        # Idle connections (the last one back is the first out), how many connections
        # hold a slot (open, opening, or handed over), and the callers waiting for one, in order.
        # A waiter's future gets a connection to reuse, or None: a slot to open a new one with.
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._all: set[Connection] = set()

    async def take(self) -> Connection | None:
        """An idle connection to reuse, or None with a slot to open one (waiting for either)."""
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if now - conn.idle_since < self.keepalive_expiry:
                    return conn
                # The freshest idle connection is too old to trust, so are the rest: close
                # them (their slots come back as they close) and open a new one in its slot.
                conn.holds_slot = False
                conn.abort()
                for old in idle:
                    old.abort()
                idle.clear()
                return None
        if self._open < self._limit:
            self._open += 1
            return None
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give(waiter.result())  # handed one as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def give(self, conn: Connection | None) -> None:
        """Hand a connection (or, for None, a slot) to the first waiter, else keep it idle (or
        free the slot)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._open -= 1
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)

    def forget(self, conn: Connection) -> None:
        """A connection closed: forget it and pass its slot on."""
        self._all.discard(conn)
        if conn.holds_slot:
            conn.holds_slot = False
            if conn in self._idle:
                self._idle.remove(conn)
            self.give(None)

    def add(self, conn: Connection) -> None:
        """A connection opened in a slot ``take`` gave."""
        self._all.add(conn)

    async def aclose(self) -> None:
        """Close every connection, and return once their sockets are closed."""
        conns = list(self._all)
        for conn in conns:
            conn.abort()
        self._idle.clear()
        for conn in conns:
            await conn.lost  # the sockets are closed once connection_lost has run
