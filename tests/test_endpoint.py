"""Where a run's requests go (``_wire.endpoint``): a base URL is quoted as a path may be, and
refused, naming ``--base-url``, when it holds what batcher would not send (credentials, a query
string, a fragment); a model's name in a path stays one segment of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import batcher
from batcher import BadOption, EndpointOptions, RequestOptions
from batcher._cli.main import main
from batcher._wire.endpoint import Target
from batcher._wire.providers import get_provider
from batcher._wire.providers._gemini import model_path


@asynccontextmanager
async def _recording() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server that records each request line and answers 400 (no model here);
    yields its ``http://host:port`` and the lines."""
    lines: list[str] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while head := await r.readuntil(b"\r\n\r\n"):
                lines.append(head.split(b"\r\n")[0].decode())
                _, sized, rest = head.lower().partition(b"content-length: ")
                await r.readexactly(int(rest.split(b"\r\n")[0]) if sized else 0)
                body = b'{"error": {"code": 400, "message": "no"}}'
                w.write(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
                )
                await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", lines
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_the_base_urls_path_is_quoted_on_both_clients() -> None:
    """``/a b`` is sent as ``/a%20b``, a letter outside ASCII as its UTF-8 escapes, an escape
    already there as it is: by the POSTs' client and by aiohttp (the batch APIs' calls)."""
    async with _recording() as (origin, lines):
        target = Target(
            EndpointOptions(base_url=f"{origin}/a b/ü/x%2Fy/v1", api_key="k"),
            get_provider("openai"),
        )
        assert target.base_url == f"{origin}/a%20b/%C3%BC/x%2Fy/v1"
        transport = target.transport(RequestOptions())
        try:
            await transport.post("chat/completions", b"{}")
            await transport.request("GET", "batches")
        finally:
            await transport.aclose()
    assert lines == [
        "POST /a%20b/%C3%BC/x%2Fy/v1/chat/completions HTTP/1.1",
        "GET /a%20b/%C3%BC/x%2Fy/v1/batches HTTP/1.1",
    ]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://user:s3cret@api.example.test/v1", "holds credentials (USER:PASS@)"),
        ("https://api.example.test/v1?key=s3cret", "has a query string (?...)"),
        ("https://api.example.test/v1?", "has a query string (?...)"),
        ("https://api.example.test/v1#s3cret", "has a fragment (#...)"),
    ],
    ids=["userinfo", "query", "empty-query", "fragment"],
)
def test_a_base_url_with_what_is_never_sent_is_refused_naming_the_flag(
    url: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BadOption) as e:
        EndpointOptions(base_url=url)
    assert e.value.option == "base_url" and said in e.value.reason
    assert "s3cret" not in str(e.value)  # a password, or a key given as ?key=
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "prompt": "hi"}\n')
    argv = ["run", str(jobs), "--out", str(tmp_path / "out"), "--base-url", url, "--model", "m"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("batcher: error: --base-url ") and said in err, err
    assert "s3cret" not in err


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash:generateContent"),
        ("models/gemini-2.5-flash", "models/gemini-2.5-flash:generateContent"),
        ("a?b", "models/a%3Fb:generateContent"),
        ("a#b", "models/a%23b:generateContent"),
        ("../../files/x", "models/..%2F..%2Ffiles%2Fx:generateContent"),
        ("..", "models/..:generateContent"),  # not a dot-segment: ":generateContent" follows
        ("a b%", "models/a%20b%25:generateContent"),
    ],
)
def test_a_model_name_stays_one_segment_of_the_path(model: str, path: str) -> None:
    job = batcher.Job.from_prompt("a", "hi")
    assert get_provider("gemini").build(job, model).path == path
    assert model_path(model, "batchGenerateContent") == path.replace(
        ":generateContent", ":batchGenerateContent"
    )


@pytest.mark.anyio
async def test_a_model_name_with_a_query_and_dot_segments_reaches_the_wire_quoted(
    tmp_path: Path,
) -> None:
    async with _recording() as (origin, lines):
        await batcher.run(
            [{"id": "a", "prompt": "hi"}],
            tmp_path,
            provider="gemini",
            base_url=f"{origin}/v1beta",
            api_key="k",
            model="../x?alt=sse#y",
            max_attempts=1,
        )
    assert lines == ["POST /v1beta/models/..%2Fx%3Falt%3Dsse%23y:generateContent HTTP/1.1"]


@pytest.mark.parametrize(
    ("key", "text", "redacted"),
    [
        ("sk-test-0123456789", "echo: sk-test-0123456789!", "echo: [API key]!"),
        ("a", "a banana and a plan", "a banana and a plan"),  # a one-letter test key
        ("abc1234", "abc1234 is seven", "abc1234 is seven"),
        ("abcd1234", "abcd1234 is eight", "[API key] is eight"),
    ],
)
def test_only_a_key_of_a_meaningful_length_is_redacted(key: str, text: str, redacted: str) -> None:
    target = Target(EndpointOptions(api_key=key), get_provider("openai"))
    assert target.redact(text) == redacted
    assert target.redact(None) is None
