"""Images in and out, end to end: the CLI against the mock over loopback, on both wire formats."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from batcher._core.media import gemini_image_tokens, openai_image_tokens
from batcher._core.sniff import dimensions
from batcher._core.tokens import count_tokens
from batcher.mock import MockConfig, MockServer
from batcher.mock._media import make_png
from tests.helpers import (
    kill_once_kept,
    mock_stats,
    read_results,
    run_cli,
    run_command,
    write_jsonl,
    write_parquet,
)
from tests.test_media import PDF, WAV, data_uri

pytestmark = pytest.mark.usefixtures("api_keys")

PNG = make_png("in", 40, 30)
WAV64 = base64.b64encode(WAV).decode()
BIG = make_png("big", 256, 200)


def _desc(data: bytes) -> str:
    """How the mock describes an image it was sent: type, size and the start of its hash."""
    dims = dimensions(data)
    assert dims is not None
    return f"[image/png {dims[0]}x{dims[1]} sha256:{hashlib.sha256(data).hexdigest()[:12]}]"


def _tokens(provider: str, data: bytes) -> int:
    dims = dimensions(data)
    assert dims is not None
    return gemini_image_tokens(*dims) if provider == "gemini" else openai_image_tokens(*dims)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_images_in_every_form_reach_the_model_on_both_providers(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(PNG)
    (tmp_path / "big.png").write_bytes(BIG)
    sample = f"{mock_server.url}/mock-files/sample-24x12.png"
    b64 = base64.b64encode(PNG).decode()
    rows: list[dict[str, Any]] = [
        {"id": "path", "prompt": "look", "images": ["pics/a.png"]},
        {"id": "abs", "prompt": "look", "images": [str(tmp_path / "big.png")]},
        {"id": "data", "prompt": "look", "images": [data_uri(PNG)]},
        {"id": "url", "prompt": "look", "images": [sample]},
        {"id": "two", "prompt": "look", "images": ["pics/a.png", "big.png"]},
        {"id": "pdf", "prompt": "read", "files": [data_uri(PDF, "application/pdf")]},
        {
            "id": "chat",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "pics/a.png", "detail": "low"}},
                        {
                            "type": "input_audio",
                            "input_audio": {
                                "data": base64.b64encode(WAV).decode(),
                                "format": "wav",
                            },
                        },
                    ],
                },
            ],
        },
        {
            "key": "native",
            "request": {
                "contents": [
                    {
                        "role": "user",
                        "parts": [
                            {"text": "look"},
                            {"inlineData": {"mimeType": "image/png", "data": b64}},
                        ],
                    }
                ]
            },
        },
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, provider, jobs, out, "--model", "m") == 0
    results = read_results(out)
    assert {r["status"] for r in results.values()} == {"ok"}, results
    for job_id in ("path", "data", "native"):
        assert results[job_id]["text"].endswith(f"look {_desc(PNG)}")
        want = count_tokens(f"look {_desc(PNG)}") + _tokens(provider, PNG)
        assert results[job_id]["input_tokens"] == want
    assert results["abs"]["text"].endswith(_desc(BIG))
    assert results["two"]["text"].endswith(f"look {_desc(PNG)} {_desc(BIG)}")
    two = _tokens(provider, PNG) + _tokens(provider, BIG)
    assert results["two"]["input_tokens"] == count_tokens(f"look {_desc(PNG)} {_desc(BIG)}") + two
    assert "[application/pdf sha256:" in results["pdf"]["text"]
    assert "[audio/wav sha256:" in results["chat"]["text"]
    if provider == "openai":  # a URL goes as it is
        assert results["url"]["text"].endswith(f"[url {sample}]")
    else:  # Gemini's native wire takes inline data only: the URL was fetched and inlined
        assert results["url"]["text"].endswith(_desc(make_png("sample-24x12.png", 24, 12)))
    assert mock_stats(mock_server)["rejected"] == 0


def test_parquet_image_columns_of_bytes_and_of_paths(
    tmp_path: Path, mock_server: MockServer
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    binary = write_parquet(tmp_path / "bytes.parquet", [{"q": "look", "img": PNG}])
    paths = write_parquet(tmp_path / "paths.parquet", [{"q": "look", "img": ["a.png", "a.png"]}])
    for n, (jobs, want) in enumerate(
        [(binary, f"look {_desc(PNG)}"), (paths, f"look {_desc(PNG)} {_desc(PNG)}")]
    ):
        out = tmp_path / f"out{n}"
        flags = ("--model", "m", "--prompt-column", "q", "--image-column", "img")
        assert run_cli(mock_server, "gemini", jobs, out, *flags) == 0
        [row] = read_results(out).values()
        assert row["text"].endswith(want)


def test_bad_refs_exit_2_naming_file_and_line_and_nothing_is_sent(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_text("hello")
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [
            {"id": "ok", "prompt": "x", "images": ["a.png"]},
            {"id": "gone", "prompt": "x", "images": ["nowhere.png"]},
            {"id": "text", "prompt": "x", "files": ["notes.txt"]},
        ],
    )
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out", "--model", "m") == 2
    err = capsys.readouterr().err
    assert f"{jobs}:2 (job 'gone'): image {tmp_path / 'nowhere.png'}: no such file" in err
    assert f"{jobs}:3 (job 'text'): file {tmp_path / 'notes.txt'}: not a type" in err
    assert mock_stats(mock_server)["requests"] == 0


def test_a_changed_image_is_a_changed_job(tmp_path: Path, mock_server: MockServer) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "j", "prompt": "x", "images": ["a.png"]}])
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, "--model", "m") == 0
    assert run_cli(mock_server, "openai", jobs, out, "--model", "m", "--redo-changed") == 0
    assert mock_stats(mock_server)["requests"] == 1  # unchanged: not sent again
    image.write_bytes(BIG)
    assert run_cli(mock_server, "openai", jobs, out, "--model", "m", "--redo-changed") == 0
    assert mock_stats(mock_server)["requests"] == 2
    assert read_results(out)["j"]["text"].endswith(_desc(BIG))


# --- images out -----------------------------------------------------------------------------------


def _check_saved(out: Path, row: dict[str, Any], count: int, size: tuple[int, int]) -> None:
    """The row lists ``count`` images, each a whole file under out/images/ with its hash."""
    assert len(row["images"]) == count
    for image in row["images"]:
        data = (out / image["path"]).read_bytes()
        assert image["path"].startswith("images/") and image["mime_type"] == "image/png"
        assert image["bytes"] == len(data) and image["sha256"] == hashlib.sha256(data).hexdigest()
        assert dimensions(data) == size
    # inline images are left out of the raw response: the files hold them
    assert "base64 characters, saved" in row["response"] or '"url":"http' in row["response"]


GENERATE: list[dict[str, Any]] = [
    {"id": "one", "prompt": "a lighthouse"},
    {"id": "two/b", "prompt": "a fox", "n": 2, "size": "32x24"},
]


BATCH = ("--mode", "batch", "--poll-interval", "0.1")


@pytest.mark.parametrize("mode", ["online", "batch"])
@pytest.mark.parametrize("model", ["gpt-image-1", "img-url"])
def test_images_endpoint_saves_every_image_answered(
    tmp_path: Path, mock_server: MockServer, model: str, mode: str
) -> None:
    """Online, or through the Batch API's /v1/images/generations endpoint at half the price."""
    jobs = write_jsonl(tmp_path / "jobs.jsonl", GENERATE)
    out = tmp_path / "out"
    flags = ("--model", model, "--endpoint", "images", "--size", "16x16", "--ipm", "100")
    assert (
        run_cli(mock_server, "openai", jobs, out, *flags, *(BATCH if mode == "batch" else ())) == 0
    )
    results = read_results(out)
    assert {r["via"] for r in results.values()} == {mode}
    _check_saved(out, results["one"], 1, (16, 16))
    _check_saved(out, results["two/b"], 2, (32, 24))
    assert len(list((out / "images").iterdir())) == 3


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_gemini_image_models_answer_text_and_images(
    tmp_path: Path, mock_server: MockServer, mode: str
) -> None:
    """Online, or in a batchGenerateContent batch whose lines ask for images."""
    rows = [{"id": r["id"], "prompt": r["prompt"]} for r in GENERATE]  # Gemini takes no n, size
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [*rows, {"id": "plain", "prompt": "hi"}])
    out = tmp_path / "out"
    flags = ("--model", "gemini-2.5-flash-image", "--modalities", "text,image")
    assert (
        run_cli(mock_server, "gemini", jobs, out, *flags, *(BATCH if mode == "batch" else ())) == 0
    )
    results = read_results(out)
    assert {r["via"] for r in results.values()} == {mode}
    assert results["one"]["text"].endswith("a lighthouse")
    _check_saved(out, results["one"], 1, (64, 64))
    text_only = tmp_path / "text"
    assert run_cli(mock_server, "gemini", jobs, text_only, "--model", "gemini-2.5-flash") == 0
    assert all(r["images"] == [] for r in read_results(text_only).values())


def test_gemini_image_jobs_asking_for_n_size_or_quality_are_refused_before_sending(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*GENERATE, {"id": "one-take", "prompt": "a boat", "n": 1}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--model", "gemini-2.5-flash-image", "--modalities", "text,image")
    assert run_cli(mock_server, "gemini", jobs, out, *flags) == 2
    err = capsys.readouterr().err
    assert "(job 'two/b'): Gemini's generateContent takes no n or size" in err
    assert "'one'" not in err and "'one-take'" not in err  # n 1 is what Gemini answers
    # the options that fill the same fields in are refused alike
    assert run_cli(mock_server, "gemini", jobs, out, *flags, "--quality", "high") == 2
    assert "(job 'one'): Gemini's generateContent takes no quality" in capsys.readouterr().err
    assert mock_stats(mock_server)["requests"] == 0


def test_a_model_without_image_output_refuses_the_modality(
    tmp_path: Path, mock_server: MockServer
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "x"}])
    out = tmp_path / "out"
    flags = ("--model", "gemini-2.5-flash", "--modalities", "text,image")
    assert run_cli(mock_server, "gemini", jobs, out, *flags) == 1
    row = read_results(out)["a"]
    assert row["error_kind"] == "permanent" and "response modalities" in row["error"]


def test_image_options_that_cannot_work_are_usage_errors(
    tmp_path: Path, mock_server: MockServer
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "x"}])
    out = tmp_path / "out"
    assert run_cli(mock_server, "gemini", jobs, out, "--model", "m", "--endpoint", "images") == 2
    assert run_cli(mock_server, "openai", jobs, out, "--model", "m", "--modalities", "image") == 2
    with pytest.raises(SystemExit) as e:  # argparse refuses it
        run_cli(mock_server, "openai", jobs, out, "--model", "m", "--modalities", "video")
    assert e.value.code == 2


BAD_URI = "data:image/png;base64,@@"


def test_the_mock_refuses_what_a_provider_would(mock_server: MockServer) -> None:
    bad = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}
                ],
            }
        ],
    }
    headers = {"authorization": "Bearer k"}
    r = httpx.post(f"{mock_server.base_url('openai')}/chat/completions", json=bad, headers=headers)
    assert r.status_code == 400 and "base64" in r.json()["error"]["message"]
    jpeg_declared = {
        "contents": [
            {"parts": [{"inlineData": {"mimeType": "image/jpeg", "data": data_uri(PNG)[22:]}}]}
        ]
    }
    url = f"{mock_server.base_url('gemini')}/models/m:generateContent"
    r = httpx.post(url, json=jpeg_declared, headers={"x-goog-api-key": "k"})
    assert r.status_code == 400 and "image/png" in r.json()["error"]["message"]


# --- crash safety ---------------------------------------------------------------------------------

StartMock = Callable[[MockConfig], MockServer]


def test_kill_9_while_saving_images_then_resume_leaves_every_image_once(
    tmp_path: Path, start_mock: StartMock
) -> None:
    server = start_mock(MockConfig(latency_ms=(5.0, 20.0)))
    rows = [{"id": f"g{i:04d}", "prompt": f"picture {i}", "n": 1 + i % 2} for i in range(600)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    command = run_command(
        jobs, out, server.base_url("openai"), "--model", "gpt-image-1", "--endpoint", "images"
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-crash"}
    rng = random.Random(12)
    kills = 0
    # three kills at seeded moments in the middle of the work, each once the run has kept a
    # given number of jobs (not after a wall-clock time, which a fast machine outruns)
    for low, high in ((40, 160), (220, 340), (400, 520)):
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        kills += kill_once_kept(proc, out, rng.randint(low, high))
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert kills == 3
    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    named: set[str] = set()
    for row in results.values():
        n = 1 + int(row["id"][1:]) % 2
        _check_saved(out, row, n, (64, 64))
        named.update(i["path"] for i in row["images"])
    on_disk = {f"images/{p.name}" for p in (out / "images").iterdir()}
    assert on_disk == named  # no temporary file left, no orphan a rerun did not overwrite
