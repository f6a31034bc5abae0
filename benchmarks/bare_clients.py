"""The baselines of ``overhead.py`` and the candidates of ``transports.py``: a bare client loop
sending a job file's prompts, nothing else.

    python benchmarks/bare_clients.py KIND JOBS BASE_URL CONCURRENCY [--uvloop] [--rate R]

with ``KIND`` one of aiohttp, httpx, httpx-aiohttp, http1, http1-httptools, aiohttp-batcher,
pyreqwest, curl_cffi.

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
  http1-httptools the same with its answer parser replaced by llhttp through ``httptools``
                  (``httptools_parser.py``)
  aiohttp-batcher batcher's ``AiohttpTransport`` (aiohttp with the lean client's caps, deadline,
                  proxies and happy eyeballs), what carries the batch APIs' calls
  pyreqwest       ``pyreqwest`` (Rust's reqwest and hyper), the answer read as a stream and
                  capped as ours, gzip/deflate on, a read timeout and a total one
  curl_cffi       ``curl_cffi``'s ``AsyncSession`` (libcurl), the same

The last five take the caps and timeouts of batcher's transports (``CAPS``), so that the
hostile cases of ``transports.py`` hold each to the same bounds.

``--uvloop`` runs the loop on uvloop (installed separately: it is not a dependency). ``--rate R``
paces the sends: job k leaves no earlier than k / R seconds after the first (a late one leaves at
once, so lateness is never lost rate): the bare loop ``throughput.py --bare`` holds a lane against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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


MAX_BODY = 64 * 2**20
CAPS: dict[str, float] = {
    "timeout": 60.0,  # a read's silence
    "deadline": 120.0,  # the whole request
    "max_body": MAX_BODY,
    "max_inflated": MAX_BODY,
}


class CapExceeded(Exception):
    """A third-party client's answer over a cap this adapter holds it to (a size, or the
    request's deadline, as ``AiohttpTransport`` holds aiohttp to it)."""


async def batcher_client(
    stack: AsyncExitStack, base: str, concurrency: int, kind: str, **caps: float
) -> Send:
    """batcher's transports: the lean client (with its parser or llhttp's) or aiohttp's."""
    from batcher._core.errors import RetryableError
    from batcher._wire import http1
    from batcher._wire.transport import AiohttpTransport

    if kind == "http1-httptools":
        from httptools_parser import LlhttpParser

        http1.ResponseParser = LlhttpParser  # type: ignore[misc,assignment]
    options = {**CAPS, **caps}
    make = AiohttpTransport if kind == "aiohttp-batcher" else http1.Http1Transport
    transport = make(
        base,
        {"authorization": HEADERS["authorization"]},
        max_connections=concurrency,
        timeout=options.pop("timeout"),
        connect_timeout=30.0,
        **options,  # type: ignore[arg-type]
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


async def pyreqwest_client(
    stack: AsyncExitStack, base: str, concurrency: int, **caps: float
) -> Send:
    import datetime

    from pyreqwest.client import ClientBuilder
    from pyreqwest.exceptions import ConnectError, ReadError

    options = {**CAPS, **caps}
    client = (
        ClientBuilder()
        .max_connections(concurrency)
        .gzip(True)
        .deflate(True)
        .read_timeout(datetime.timedelta(seconds=options["timeout"]))
        .timeout(datetime.timedelta(seconds=options["deadline"]))
        .default_headers(HEADERS)
        .build()
    )
    stack.push_async_callback(client.close)
    url = base + PATH
    cap = int(min(options["max_body"], options["max_inflated"]))  # it hands on decoded bytes

    async def send(body: bytes) -> tuple[int, bytes]:
        for attempt in range(ATTEMPTS):
            try:
                async with (
                    _deadline(options["deadline"]),
                    client.post(url).body_bytes(body).build_streamed() as r,
                ):
                    chunks, got = [], 0
                    while (chunk := await r.body_reader.read_chunk()) is not None:
                        got += len(chunk)
                        if got > cap:
                            raise CapExceeded(f"an answer body over {cap} bytes")
                        chunks.append(bytes(chunk))
                    return r.status, b"".join(chunks)
            except (ConnectError, ReadError):
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError

    return send


async def curl_cffi_client(
    stack: AsyncExitStack, base: str, concurrency: int, **caps: float
) -> Send:
    from curl_cffi.requests import AsyncSession
    from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError

    options = {**CAPS, **caps}
    session = await stack.enter_async_context(
        AsyncSession(max_clients=concurrency, headers=HEADERS, timeout=options["deadline"])
    )
    url = base + PATH
    cap = int(min(options["max_body"], options["max_inflated"]))

    async def send(body: bytes) -> tuple[int, bytes]:
        for attempt in range(ATTEMPTS):
            try:
                async with _deadline(options["deadline"]):
                    return await one(body)
            except CurlConnectionError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError

    async def one(body: bytes) -> tuple[int, bytes]:
        r = await session.post(url, data=body, stream=True, accept_encoding="gzip, deflate")
        try:
            chunks, got = [], 0
            async for chunk in r.aiter_content():
                got += len(chunk)
                if got > cap:
                    raise CapExceeded(f"an answer body over {cap} bytes")
                chunks.append(chunk)
            return r.status_code, b"".join(chunks)
        finally:
            await r.aclose()

    return send


@contextlib.asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """The whole request within ``seconds``, else ``CapExceeded``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise CapExceeded(f"not answered within the {seconds:g} s deadline") from None


async def make_client(
    kind: str, stack: AsyncExitStack, base: str, concurrency: int, **caps: float
) -> Send:
    """The ``Send`` of client ``kind`` (see the module's docstring)."""
    if kind == "aiohttp":
        return await aiohttp_client(stack, base, concurrency)
    if kind in ("httpx", "httpx-aiohttp"):
        return await httpx_client(stack, base, concurrency, over_aiohttp=kind != "httpx")
    if kind == "http1" and not caps:
        return await http1_client(stack, base, concurrency)
    if kind in ("http1", "http1-httptools", "aiohttp-batcher"):
        return await batcher_client(stack, base, concurrency, kind, **caps)
    if kind == "pyreqwest":
        return await pyreqwest_client(stack, base, concurrency, **caps)
    if kind == "curl_cffi":
        return await curl_cffi_client(stack, base, concurrency, **caps)
    raise SystemExit(f"unknown client {kind!r}")


async def main(kind: str, path: str, base: str, concurrency: int, rate: float = 0.0) -> int:
    base = base.rstrip("/") + "/"
    ok = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    async with AsyncExitStack() as stack:
        send = await make_client(kind, stack, base, concurrency)

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
