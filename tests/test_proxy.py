"""Real networks: proxies from the environment or ``--proxy`` (a real tinyproxy in between, with
and without BasicAuth), ``no_proxy`` and ``--no-proxy``, and TLS to a server whose certificate a
private CA (``trustme``) signed, trusted through ``--ca-bundle`` or ``$SSL_CERT_FILE``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

import batcher
from batcher import ProxyRefused, UntrustedCertificate, UsageError
from batcher._cli.main import main
from batcher._wire.http1 import Http1Transport
from batcher._wire.proxy import Proxies, Proxy, ssl_context
from batcher._wire.transport import AiohttpTransport
from batcher.mock import MockConfig, MockServer
from tests.helpers import read_results
from tests.tinyproxy import tinyproxy
from tests.tls_servers import tls_front

_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
SECRET = "s3cretPw"
JOBS = [{"id": f"j{i}", "prompt": f"question {i}"} for i in range(3)]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test states its own proxy environment, whatever the machine's."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


@pytest.fixture
def mock(start_mock: Callable[[MockConfig], MockServer]) -> MockServer:
    return start_mock(MockConfig())


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    """A private CA, and its certificate as a PEM file (what ``--ca-bundle`` names)."""
    authority = trustme.CA()
    pem = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return authority, pem


def _client(url: str, **kw: object) -> Http1Transport:
    return Http1Transport(
        url,
        {"authorization": "Bearer k"},
        max_connections=2,
        timeout=10,
        connect_timeout=10,
        **kw,  # type: ignore[arg-type]
    )


BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


# --- which proxy, without a network ------------------------------------------------------------


def test_the_environment_names_the_proxy_and_no_proxy_the_exceptions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://secure.proxy:3128")
    monkeypatch.setenv("http_proxy", "plain.proxy:8080")  # no scheme: http://, as curl takes it
    monkeypatch.setenv("ALL_PROXY", "http://any.proxy:1")
    monkeypatch.setenv("NO_PROXY", "direct.test, .corp.test, ported.test:8443, 10.0.0.0/8")
    p = Proxies()
    assert p.for_url("https://api.openai.com/v1") == Proxy("secure.proxy", 3128)
    assert p.for_url("http://api.openai.com/v1") == Proxy("plain.proxy", 8080)
    for url in (
        "https://direct.test/v1",  # a host
        "https://api.corp.test/v1",  # a domain suffix
        "https://ported.test:8443/v1",  # host:port...
        "http://10.1.2.3:8000/v1",  # a CIDR block
    ):
        assert p.for_url(url) is None, url
    assert p.for_url("https://ported.test/v1") is not None  # ...on that port only
    assert p.for_url("http://11.1.2.3/v1") is not None
    # --no-proxy: the environment is ignored; --proxy: every URL, but no_proxy's still go direct
    assert not Proxies(use_env=False)
    explicit = Proxies("http://mine:9")
    assert explicit.for_url("http://plain.test/") == Proxy("mine", 9)
    assert explicit.for_url("https://direct.test/") is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert Proxies().for_url("https://x.test/") == Proxy("any.proxy", 1)  # ALL_PROXY, for any


def test_proxy_credentials_become_basic_auth_and_are_never_shown() -> None:
    proxy = Proxy.parse(f"http://user:{SECRET}%40x@proxy.test:3128", "--proxy")
    token = base64.b64encode(f"user:{SECRET}@x".encode()).decode()
    assert proxy.authorization == f"Basic {token}"
    assert proxy.url == "http://proxy.test:3128"
    options = batcher.RunOptions(proxy=f"http://user:{SECRET}@proxy.test:3128")
    for shown in (repr(proxy), str(proxy), repr(options), repr(options.requests)):
        assert SECRET not in shown
    with pytest.raises(UsageError, match="socks5:// proxies are not supported") as e:
        Proxy.parse(f"socks5://user:{SECRET}@proxy.test:1080", "$all_proxy")
    assert SECRET not in str(e.value)
    with pytest.raises(batcher.UsageError, match="--no-proxy"):
        batcher.RunOptions(proxy="http://p.test:1", no_proxy=True)


def test_the_embedded_mock_is_never_sent_through_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: it would fail
    summary = batcher.run_sync(JOBS, tmp_path, mock="instant", model="m")
    assert (summary.ok, summary.exit_code) == (3, 0)


# --- through a real proxy ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_posts_and_a_batch_call_go_through_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mock: MockServer
) -> None:
    base = mock.base_url("openai")
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        summary = await batcher.run(JOBS, tmp_path / "out", base_url=base, api_key="k", model="m")
        assert (summary.ok, summary.exit_code) == (3, 0)
        posts = [r for r in proxy.requests() if r.startswith("POST ")]
        # absolute form: the proxy was asked for the mock's URL
        assert posts == [f"POST {base}/chat/completions HTTP/1.1"] * 3
        client = _client(base, proxies=Proxies())  # a batch API's call, over aiohttp
        try:
            reply = await client.request("GET", "batches")
        finally:
            await client.aclose()
        assert reply.status_code == 200
        assert proxy.requests()[-1] == f"GET {base}/batches HTTP/1.1"


@pytest.mark.anyio
async def test_no_proxy_and_the_no_proxy_flag_go_direct(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mock: MockServer
) -> None:
    base = mock.base_url("openai")
    with tinyproxy(tmp_path) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "example.test,127.0.0.0/8")  # the mock's, as CIDR
        summary = await batcher.run(JOBS, tmp_path / "a", base_url=base, api_key="k", model="m")
        assert (summary.ok, summary.exit_code) == (3, 0)
        assert proxy.requests() == []
        # --no-proxy: the environment names a proxy that would refuse every connection
        monkeypatch.delenv("NO_PROXY")
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        summary = await batcher.run(
            JOBS, tmp_path / "b", base_url=base, api_key="k", model="m", no_proxy=True
        )
        assert (summary.ok, summary.exit_code) == (3, 0)


@pytest.mark.anyio
async def test_plain_http_through_a_proxy_that_wants_a_password(
    tmp_path: Path, mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    base = mock.base_url("openai")
    with tinyproxy(tmp_path, auth=("batcher", SECRET)) as proxy:
        summary = await batcher.run(
            JOBS, tmp_path / "out", base_url=base, api_key="k", model="m", proxy=proxy.url
        )
        assert (summary.ok, summary.exit_code) == (3, 0)
        assert len(proxy.requests()) == 3
        wrong = _client(base, proxies=Proxies(proxy.url.replace(SECRET, "nope")))
        try:
            reply = await wrong.post("chat/completions", BODY)
        finally:
            await wrong.aclose()
        # the proxy's answer, as any other (tinyproxy says 401 to a wrong password, 407 to none)
        assert reply.status_code in (401, 407)
    assert not _holds(tmp_path / "out", SECRET)
    assert SECRET not in caplog.text


@pytest.mark.anyio
async def test_https_through_the_tunnel_of_a_proxy_that_wants_a_password(
    tmp_path: Path, mock: MockServer, ca: tuple[trustme.CA, Path], caplog: pytest.LogCaptureFixture
) -> None:
    authority, pem = ca
    async with tls_front(mock.port, authority) as port:
        base = f"https://127.0.0.1:{port}/v1"
        with tinyproxy(tmp_path, auth=("batcher", SECRET)) as proxy:
            summary = await batcher.run(
                JOBS,
                tmp_path / "out",
                base_url=base,
                api_key="k",
                model="m",
                proxy=proxy.url,
                ca_bundle=str(pem),
            )
            assert (summary.ok, summary.exit_code) == (3, 0)
            tunnels = proxy.requests()
            assert tunnels and set(tunnels) == {f"CONNECT 127.0.0.1:{port} HTTP/1.1"}
            proxies = Proxies(proxy.url)
            client = _client(base, proxies=proxies, ssl_context=ssl_context(str(pem)))
            try:  # a batch API's call, over aiohttp through its own tunnel
                assert (await client.request("GET", "batches")).status_code == 200
            finally:
                await client.aclose()
            assert len(proxy.requests()) == len(tunnels) + 1
            # a wrong password: the proxy refuses the run (exit 78), the password nowhere
            wrong = _client(base, proxies=Proxies(proxy.url.replace(SECRET, "nope")))
            try:
                with pytest.raises(ProxyRefused, match=r"refused to carry.*40[17]") as e:
                    await wrong.post("chat/completions", BODY)
            finally:
                await wrong.aclose()
            assert "nope" not in str(e.value) and proxy.url not in str(e.value)
    assert not _holds(tmp_path / "out", SECRET)
    assert SECRET not in caplog.text


def _holds(folder: Path, text: str) -> bool:
    """Whether any file under ``folder`` holds ``text``."""
    return any(text.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())


# --- trust -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_private_ca_is_trusted_from_ca_bundle_or_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, mock: MockServer, ca: tuple[trustme.CA, Path]
) -> None:
    authority, pem = ca
    async with tls_front(mock.port, authority) as port:
        base = f"https://127.0.0.1:{port}/v1"

        async def both(context: ssl.SSLContext | None) -> tuple[int, int]:
            client = _client(base, ssl_context=context)
            try:
                posted = await client.post("chat/completions", BODY)
                other = await client.request("GET", "batches")  # aiohttp, same context
                return posted.status_code, other.status_code
            finally:
                await client.aclose()

        with pytest.raises(UntrustedCertificate, match="CERTIFICATE_VERIFY_FAILED"):
            await both(ssl_context())  # the system's store knows no such CA
        assert await both(ssl_context(str(pem))) == (200, 200)
        monkeypatch.setenv("SSL_CERT_FILE", str(pem))
        assert await both(ssl_context()) == (200, 200)
    with pytest.raises(UsageError, match=r"--ca-bundle .*missing\.pem"):
        ssl_context(str(pem.with_name("missing.pem")))


@pytest.mark.anyio
async def test_system_trust_verifies_through_truststore_and_adds_the_ca_bundle(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mock: MockServer,
    ca: tuple[trustme.CA, Path],
) -> None:
    """``--system-trust``: a ``truststore.SSLContext``, whose verifier (the OS's) sees every
    server's chain, for both clients; ``--ca-bundle`` with it trusts the file's CAs as well as
    the system's, not instead."""
    import truststore

    api = sys.modules["truststore._api"]  # the package deletes its name for the module
    authority, pem = ca
    chains: list[str | None] = []
    verify = api._verify_peercerts_impl

    def counted(context: ssl.SSLContext, chain: list[bytes], server_hostname: str | None) -> None:
        chains.append(server_hostname)
        verify(context, chain, server_hostname=server_hostname)

    monkeypatch.setattr(api, "_verify_peercerts_impl", counted)
    assert isinstance(ssl_context(system=True), truststore.SSLContext)
    assert isinstance(ssl_context(str(pem), system=True), truststore.SSLContext)
    assert not isinstance(ssl_context(str(pem)), truststore.SSLContext)
    async with tls_front(mock.port, authority) as port:
        base = f"https://127.0.0.1:{port}/v1"

        async def both(context: ssl.SSLContext | None, url: str = base) -> tuple[int, int]:
            client = _client(url, ssl_context=context)
            try:
                posted = await client.post("chat/completions", BODY)
                other = await client.request("GET", "batches")  # aiohttp, same context
                return posted.status_code, other.status_code
            finally:
                await client.aclose()

        with pytest.raises(UntrustedCertificate, match="CERTIFICATE_VERIFY_FAILED"):
            await both(ssl_context(system=True))  # the system's store alone knows no such CA
        chains.clear()
        assert await both(ssl_context(str(pem), system=True)) == (200, 200)
        assert chains == ["127.0.0.1", "127.0.0.1"]  # one handshake each, both verified there
        # as well as, not instead: on Linux the system's store is OpenSSL's default file, which
        # $SSL_CERT_FILE names; a server another CA signed is trusted through it beside --ca-bundle
        other, other_pem = trustme.CA(), tmp_path / "system.pem"
        other.cert_pem.write_to_path(str(other_pem))
        monkeypatch.setenv("SSL_CERT_FILE", str(other_pem))
        async with tls_front(mock.port, other) as port2:
            context = ssl_context(str(pem), system=True)
            assert await both(context) == (200, 200)
            assert await both(context, f"https://127.0.0.1:{port2}/v1") == (200, 200)
            with pytest.raises(UntrustedCertificate, match="CERTIFICATE_VERIFY_FAILED"):
                await both(ssl_context(str(pem)), f"https://127.0.0.1:{port2}/v1")  # instead
        monkeypatch.delenv("SSL_CERT_FILE")
        chains.clear()
        summary = await batcher.run(
            JOBS,
            tmp_path / "out",
            base_url=base,
            api_key="k",
            model="m",
            ca_bundle=str(pem),
            system_trust=True,
        )
        assert (summary.ok, summary.exit_code) == (3, 0)
    assert chains  # the run's connections too
    with pytest.raises(UsageError, match=r"--ca-bundle .*missing\.pem"):
        ssl_context(str(pem.with_name("missing.pem")), system=True)


@pytest.mark.anyio
async def test_a_tunnel_carries_neither_the_key_nor_the_endpoints_headers() -> None:
    """What a proxy is sent to open a tunnel: the origin and the proxy's credentials, nothing
    of the endpoint's (aiohttp copies a session's default headers into its CONNECT)."""
    heads: list[bytes] = []

    async def refusing(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        heads.append(await r.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(refusing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Http1Transport(
        "https://api.example.test/v1",
        {"authorization": "Bearer sk-KEY", "x-goog-api-key": "g-KEY"},
        max_connections=1,
        timeout=5,
        connect_timeout=5,
        proxies=Proxies(f"http://u:{SECRET}@127.0.0.1:{port}"),
    )
    try:
        with pytest.raises(ProxyRefused, match=r"to api\.example\.test:443 \(403"):
            await client.post("chat/completions", BODY)
        with pytest.raises(ProxyRefused, match="403"):
            await client.request("GET", "batches")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    token = base64.b64encode(f"u:{SECRET}".encode())
    assert len(heads) == 2
    for head in heads:
        assert head.startswith(b"CONNECT api.example.test:443 HTTP/1.1\r\n")
        assert b"Basic " + token in head
        assert b"KEY" not in head


# --- a proxy that refuses us: not the key's fault, and the run stops ---------------------------


class _Refusing(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    status = b"407 Proxy Authentication Required"
    heads: list[bytes]


class _Refuse(socketserver.StreamRequestHandler):
    """Reads a request's head (a ``CONNECT``, or a plain request in absolute form) and answers
    it with the server's status, as a proxy that will not carry it would."""

    server: _Refusing

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n") and (line := self.rfile.readline()):
            head += line
        self.server.heads.append(head)
        page = b"<h1>no</h1>"  # a proxy's page, not a provider's JSON
        self.wfile.write(
            b'HTTP/1.1 %b\r\nproxy-authenticate: Basic realm="corp"\r\n'
            b"content-type: text/html\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
            % (self.server.status, len(page), page)
        )


@contextlib.contextmanager
def _refusing_proxy(status: bytes = b"407 Proxy Authentication Required") -> Iterator[_Refusing]:
    """A loopback proxy stub answering every request (and every ``CONNECT``) with ``status``."""
    server = _Refusing(("127.0.0.1", 0), _Refuse)
    server.status = status
    server.heads = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _stub_url(server: _Refusing, credentials: str = "") -> str:
    return f"http://{credentials}127.0.0.1:{server.server_address[1]}"


def _aiohttp(url: str, proxy: str) -> AiohttpTransport:
    return AiohttpTransport(
        url,
        {"authorization": "Bearer sk-KEY"},
        max_connections=1,
        timeout=5,
        connect_timeout=5,
        proxies=Proxies(proxy),
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scheme", "status", "said"),
    [
        ("http", b"407 Proxy Authentication Required", "407: it refused the credentials"),
        ("https", b"407 Proxy Authentication Required", "407: it refused the credentials"),
        ("https", b"403 Forbidden", "403 Forbidden: its rules do not let us through"),
    ],
    ids=["plain-407", "tunnel-407", "tunnel-403"],
)
async def test_aiohttp_reads_a_proxys_refusal_as_the_proxys(
    scheme: str, status: bytes, said: str
) -> None:
    """A 407 to a plain request, or a 407 or 403 to a ``CONNECT``: ``ProxyRefused`` naming the
    proxy without its password, not an answer of the endpoint's. (A 403 to a plain request may
    be the endpoint's own: it is classified as the endpoint's answers are.)"""
    with _refusing_proxy(status) as server:
        client = _aiohttp(f"{scheme}://api.example.test/v1", _stub_url(server, f"u:{SECRET}@"))
        try:
            for call in (client.post("chat/completions", BODY), client.request("GET", "batches")):
                with pytest.raises(ProxyRefused) as e:
                    await call
                assert e.value.proxy == _stub_url(server)
                assert f"the proxy {_stub_url(server)} refused" in str(e.value)
                assert said in str(e.value)
                assert SECRET not in str(e.value) and "KEY" not in str(e.value)
        finally:
            await client.aclose()


@pytest.mark.anyio
async def test_the_lean_client_reads_a_proxys_407_to_a_post_as_the_proxys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain HTTP through a proxy that wants credentials: the run stops at once (not one job
    after another recorded in error, nor retried as an outage), naming the proxy."""
    with _refusing_proxy() as server:
        with pytest.raises(ProxyRefused) as e:
            await batcher.run(
                JOBS,
                tmp_path / "out",
                base_url="http://api.example.test/v1",
                api_key="sk-KEY",
                model="m",
                proxy=_stub_url(server),
            )
        sent = len(server.heads)
    message = str(e.value)
    assert f"the proxy {_stub_url(server)} refused to carry requests" in message
    assert "407: it wants credentials" in message and "API key is not in question" in message
    assert "was refused by" not in message  # the key's refusal, as explain() words it
    assert "sk-KEY" not in message + caplog.text
    assert sent <= 3  # each job at most once: a refusal is not retried


@pytest.mark.anyio
async def test_the_lean_client_reads_a_refused_tunnel_as_the_proxys() -> None:
    with _refusing_proxy() as server:
        client = _client("https://api.example.test/v1", proxies=Proxies(_stub_url(server)))
        try:
            with pytest.raises(ProxyRefused, match="407: it wants credentials"):
                await client.post("chat/completions", BODY)
        finally:
            await client.aclose()


def test_a_proxys_refusal_exits_78_naming_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-KEY")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "prompt": "hi"}\n')
    with _refusing_proxy() as server:
        code = main(
            [
                "run",
                str(jobs),
                "--out",
                str(tmp_path / "out"),
                "--base-url",
                "http://api.example.test/v1",
                "--model",
                "m",
                "--no-progress",
                "--proxy",
                _stub_url(server, f"u:{SECRET}@"),
            ]
        )
    err = capsys.readouterr().err
    assert code == 78, err
    assert f"the proxy {_stub_url(server)} refused" in err and "407" in err
    assert SECRET not in err and "sk-KEY" not in err


# --- image URLs: downloaded the way the requests go --------------------------------------------

SAMPLE = "/mock-files/sample-24x12.png"  # an image the mock serves


@pytest.mark.anyio
async def test_image_urls_are_downloaded_through_the_runs_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mock: MockServer
) -> None:
    """Images answered as URLs (OpenAI's images API) and a job's image URL fetched to be sent
    inline (Gemini) go through ``--proxy`` as the POSTs do; with ``--no-proxy``, never through
    the environment's."""
    with tinyproxy(tmp_path) as proxy:
        summary = await batcher.run(
            [{"id": "a", "prompt": "a cat"}],
            tmp_path / "answered",
            base_url=mock.base_url("openai"),
            api_key="k",
            model="img-url",  # the mock answers this model's images as URLs
            api="images",
            proxy=proxy.url,
        )
        assert (summary.ok, summary.exit_code) == (1, 0)
        assert [p.suffix for p in (tmp_path / "answered" / "images").iterdir()] == [".png"]
        got = [r for r in proxy.requests() if r.startswith("GET ")]
        assert len(got) == 1 and got[0].startswith(f"GET {mock.url}/mock-files/img-"), got
        summary = await batcher.run(
            [{"id": "u", "prompt": "look", "images": [mock.url + SAMPLE]}],
            tmp_path / "inline",
            provider="gemini",
            base_url=mock.base_url("gemini"),
            api_key="k",
            model="m",
            proxy=proxy.url,
        )
        assert (summary.ok, summary.exit_code) == (1, 0)
        assert proxy.requests()[-2:][0] == f"GET {mock.url}{SAMPLE} HTTP/1.1"  # then the POST
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: it would fail
    summary = await batcher.run(
        [{"id": "u", "prompt": "look", "images": [mock.url + SAMPLE]}],
        tmp_path / "direct",
        provider="gemini",
        base_url=mock.base_url("gemini"),
        api_key="k",
        model="m",
        no_proxy=True,
    )
    assert (summary.ok, summary.exit_code) == (1, 0)


@pytest.mark.anyio
async def test_an_image_url_behind_a_private_ca_is_trusted_from_ca_bundle(
    tmp_path: Path, mock: MockServer, ca: tuple[trustme.CA, Path]
) -> None:
    authority, pem = ca
    async with tls_front(mock.port, authority) as port:
        jobs = [{"id": "u", "prompt": "look", "images": [f"https://127.0.0.1:{port}{SAMPLE}"]}]

        async def run(out: str, ca_bundle: str | None) -> batcher.RunSummary:
            return await batcher.run(
                jobs,
                tmp_path / out,
                provider="gemini",
                base_url=mock.base_url("gemini"),
                api_key="k",
                model="m",
                ca_bundle=ca_bundle,
            )

        summary = await run("a", str(pem))
        assert (summary.ok, summary.exit_code) == (1, 0)
        # and without it, the system's store knows no such CA: the job cannot be sent
        summary = await run("b", None)
        assert (summary.errors, summary.exit_code) == (1, 1)
    [row] = read_results(tmp_path / "b").values()
    assert "CERTIFICATE_VERIFY_FAILED" in row["error"]
