"""The baselines of ``overhead.py``: a bare client loop sending a job file's prompts, nothing else.

    python benchmarks/bare_clients.py KIND JOBS BASE_URL CONCURRENCY [--uvloop] [--rate R]

with ``KIND`` one of aiohttp, httpx, httpx-aiohttp, http1.

``CONCURRENCY`` workers on plain asyncio share the job file's lines; each builds the body batcher
sends for a job (the same JSON chat body, compact UTF-8, ``content-type: application/json``, a
Bearer key), POSTs it to ``BASE_URL/chat/completions``, reads the answer, checks it is a 200 and
parses its JSON. Prints how many answers were 200. The clients:

  aiohttp         one ``aiohttp.ClientSession`` over ``TCPConnector(limit=CONCURRENCY)``
  httpx           ``httpx.AsyncClient`` with its default transport (httpcore), limits CONCURRENCY
  httpx-aiohttp   ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport`` (the limits
                  given to the transport)
  http1           batcher's own ``Http1Transport`` (``batcher/_wire/http1.py``), ``max_connections``
                  CONCURRENCY: what a run sends over

``--uvloop`` runs the loop on uvloop (installed separately: it is not a dependency). ``--rate R``
paces the sends: job k leaves no earlier than k / R seconds after the first (a late one leaves at
once, so lateness is never lost rate): the bare loop ``throughput.py --bare`` holds a lane against.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack

PATH = "chat/completions"
HEADERS = {"authorization": "Bearer k", "content-type": "application/json"}
ATTEMPTS = 3  # a kept-alive connection the server closed fails once; send again

Send = Callable[[bytes], Awaitable[tuple[int, bytes]]]


def body_of(line: str) -> bytes:
    """The request body batcher builds for a job line (see
    ``batcher._wire.providers._http.encode``)."""
    job = json.loads(line)
    body = {"model": job["model"], "messages": [{"role": "user", "content": job["prompt"]}]}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def aiohttp_client(stack: AsyncExitStack, base: str, concurrency: int) -> Send:
    import aiohttp
    from yarl import URL

    connector = aiohttp.TCPConnector(limit=concurrency)
    session = await stack.enter_async_context(
        aiohttp.ClientSession(headers=HEADERS, connector=connector)
    )
    url = URL(base + PATH)

    async def send(body: bytes) -> tuple[int, bytes]:
        for attempt in range(ATTEMPTS):
            try:
                async with session.post(url, data=body) as r:
                    return r.status, await r.read()
            except aiohttp.ClientConnectionError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError

    return send


async def httpx_client(
    stack: AsyncExitStack, base: str, concurrency: int, *, over_aiohttp: bool
) -> Send:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if over_aiohttp:
        from httpx_aiohttp import AiohttpTransport

        client = httpx.AsyncClient(
            base_url=base, headers=HEADERS, transport=AiohttpTransport(limits=limits)
        )
    else:
        client = httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits)
    await stack.enter_async_context(client)

    async def send(body: bytes) -> tuple[int, bytes]:
        for attempt in range(ATTEMPTS):
            try:
                r = await client.post(PATH, content=body)
                return r.status_code, r.content
            except httpx.TransportError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError

    return send


async def http1_client(stack: AsyncExitStack, base: str, concurrency: int) -> Send:
    from batcher._core.errors import RetryableError
    from batcher._wire.http1 import Http1Transport

    transport = Http1Transport(
        base,
        {"authorization": HEADERS["authorization"]},
        max_connections=concurrency,
        timeout=60.0,
        connect_timeout=30.0,
    )
    stack.push_async_callback(transport.aclose)

    async def send(body: bytes) -> tuple[int, bytes]:
        for attempt in range(ATTEMPTS):
            try:
                reply = await transport.post(PATH, body)
                return reply.status_code, reply.content
            except RetryableError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError

    return send


async def main(kind: str, path: str, base: str, concurrency: int, rate: float = 0.0) -> int:
    base = base.rstrip("/") + "/"
    ok = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    async with AsyncExitStack() as stack:
        if kind == "aiohttp":
            send = await aiohttp_client(stack, base, concurrency)
        elif kind in ("httpx", "httpx-aiohttp"):
            send = await httpx_client(stack, base, concurrency, over_aiohttp=kind != "httpx")
        elif kind == "http1":
            send = await http1_client(stack, base, concurrency)
        else:
            raise SystemExit(f"unknown client {kind!r}")

        async def worker(lines: Iterator[str]) -> None:
            nonlocal ok
            nonlocal sent
            for line in lines:  # shared by the workers: each takes the next job
                if rate:
                    slot, sent = start + sent / rate, sent + 1
                    if slot > loop.time():
                        await asyncio.sleep(slot - loop.time())
                status, content = await send(body_of(line))
                if status == 429 and rate:
                    continue  # paced past the limit: the server counts it
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {content[:200]!r}")
                json.loads(content)
                ok += 1

        with open(path) as f:  # noqa: ASYNC230 (as batcher reads: in the loop)
            lines = iter(f)
            await asyncio.gather(*(worker(lines) for _ in range(concurrency)))
    return ok


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--uvloop"]
    rate = 0.0
    if "--rate" in args:
        i = args.index("--rate")
        rate = float(args.pop(i + 1))
        args.pop(i)
    coroutine = main(args[0], args[1], args[2], int(args[3]), rate)
    if "--uvloop" in sys.argv:
        import uvloop

        print(uvloop.run(coroutine))
    else:
        print(asyncio.run(coroutine))
