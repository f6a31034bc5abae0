"""A TLS-inspecting proxy in front of the mock served over HTTPS (``tests/tls_servers.py``: a
man in the middle presenting certificates of its own CA, as a company's proxy does): a run
goes through it with that CA in ``--ca-bundle``, on both clients (the lean one's POSTs,
aiohttp's batch uploads and downloads), and stops without it, exit 78, naming the certificate
problem and what to do."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import batcher
from batcher import UntrustedCertificate
from batcher._cli.main import main
from batcher._wire.http1 import Http1Transport
from batcher._wire.proxy import Proxies, ssl_context
from batcher._wire.transport import AiohttpTransport
from batcher.mock import MockConfig, MockServer
from tests.helpers import read_results
from tests.tls_servers import Inspector, in_background, tls_front, tls_inspecting_proxy

JOBS = [{"id": f"j{i}", "prompt": f"question {i}"} for i in range(3)]
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@dataclass
class Scene:
    base: str  # the mock over HTTPS, its certificate from the origin's CA
    proxy: Inspector  # in between, with certificates from its own CA
    proxy_ca: Path  # that CA's certificate: what --ca-bundle must name
    origin_ca: Path  # the origin's: of no use to a client talking to the proxy


@asynccontextmanager
async def _scene(mock: MockServer, folder: Path) -> AsyncIterator[Scene]:
    origin, inspecting = trustme.CA(), trustme.CA()
    origin_pem, proxy_pem = folder / "origin-ca.pem", folder / "proxy-ca.pem"
    origin.cert_pem.write_to_path(str(origin_pem))
    inspecting.cert_pem.write_to_path(str(proxy_pem))
    upstream = ssl.create_default_context(cafile=str(origin_pem))
    async with (
        tls_front(mock.port, origin) as port,
        tls_inspecting_proxy(inspecting, upstream) as proxy,
    ):
        yield Scene(f"https://127.0.0.1:{port}/v1", proxy, proxy_pem, origin_pem)


@pytest.fixture
def mock(start_mock: Callable[[MockConfig], MockServer]) -> MockServer:
    return start_mock(MockConfig())


@pytest.mark.anyio
async def test_a_run_goes_through_a_tls_inspecting_proxy_trusting_its_ca(
    tmp_path: Path, mock: MockServer
) -> None:
    async with _scene(mock, tmp_path) as scene:
        summary = await batcher.run(
            JOBS,
            tmp_path / "out",
            base_url=scene.base,
            api_key="k",
            model="m",
            proxy=scene.proxy.url,
            ca_bundle=str(scene.proxy_ca),
        )
        assert (summary.ok, summary.exit_code) == (3, 0)
        port = scene.base.split(":")[2].split("/")[0]
        assert scene.proxy.tunnels and set(scene.proxy.tunnels) == {f"127.0.0.1:{port}"}
        # the proxy read every request in clear: it was in the middle, not a mere tunnel
        assert scene.proxy.seen == ["POST /v1/chat/completions HTTP/1.1"] * 3
        assert scene.proxy.refused == []
    assert sorted(read_results(tmp_path / "out")) == ["j0", "j1", "j2"]


@pytest.mark.anyio
@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_both_clients_trust_the_proxys_ca_and_only_it(
    tmp_path: Path, mock: MockServer, client: str
) -> None:
    async with _scene(mock, tmp_path) as scene:

        async def post(ca: Path | None) -> int:
            kind = Http1Transport if client == "lean" else AiohttpTransport
            transport = kind(
                scene.base,
                {"authorization": "Bearer k"},
                max_connections=2,
                timeout=10,
                connect_timeout=10,
                proxies=Proxies(scene.proxy.url),
                ssl_context=ssl_context(str(ca) if ca else None),
            )
            try:
                return (await transport.post("chat/completions", BODY)).status_code
            finally:
                await transport.aclose()

        assert await post(scene.proxy_ca) == 200
        for ca in (None, scene.origin_ca):  # the system's store; the origin's own CA
            with pytest.raises(UntrustedCertificate) as e:
                await post(ca)
            message = str(e.value)
            assert "the TLS certificate presented for 127.0.0.1:" in message
            assert "CERTIFICATE_VERIFY_FAILED" in message and "--ca-bundle" in message
        assert scene.proxy.seen == ["POST /v1/chat/completions HTTP/1.1"]  # the trusted one


@pytest.mark.anyio
async def test_a_batch_is_uploaded_and_its_results_downloaded_through_it(
    tmp_path: Path, mock: MockServer
) -> None:
    async with _scene(mock, tmp_path) as scene:
        summary = await batcher.run(
            JOBS,
            tmp_path / "out",
            base_url=scene.base,
            api_key="k",
            model="m",
            proxy=scene.proxy.url,
            ca_bundle=str(scene.proxy_ca),
            mode="batch",
            poll_interval=0.05,
        )
        assert (summary.ok, summary.exit_code) == (3, 0)
        seen = scene.proxy.seen
        assert "POST /v1/files HTTP/1.1" in seen  # the upload
        assert "POST /v1/batches HTTP/1.1" in seen
        downloads = [line for line in seen if line.startswith("GET /v1/files/")]
        assert downloads and all(line.endswith("/content HTTP/1.1") for line in downloads)
    assert sorted(read_results(tmp_path / "out")) == ["j0", "j1", "j2"]


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_without_its_ca_the_run_stops_at_once_exit_78_naming_the_certificate(
    tmp_path: Path,
    mock: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    """Not retried as an outage (the default --max-outage is half an hour): no retry makes the
    certificate trusted. Exit 78, as a proxy's refusal: the network's settings need fixing."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-KEY")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(f'{{"id": "{j["id"]}", "prompt": "hi"}}\n' for j in JOBS))
    out = ["run", str(jobs), "--out", str(tmp_path / "out"), "--poll-interval", "0.05"]
    with in_background(lambda: _scene(mock, tmp_path)) as scene:
        flags = ["--base-url", scene.base, "--model", "m", "--no-progress", "--mode", mode]
        flags += ["--proxy", scene.proxy.url]
        code = main([*out, *flags])
        err = capsys.readouterr().err
        assert code == 78, err
        assert "the TLS certificate presented for 127.0.0.1:" in err
        assert "CERTIFICATE_VERIFY_FAILED" in err
        assert "--ca-bundle" in err and "--system-trust" in err
        assert "sk-KEY" not in err
        assert scene.proxy.seen == []  # nothing was sent through it
        # the same run trusting the proxy's CA finishes
        code = main([*out, *flags, "--ca-bundle", str(scene.proxy_ca)])
        assert code == 0, capsys.readouterr().err
        assert scene.proxy.seen
