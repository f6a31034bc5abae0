"""Images and files in jobs: sniffing, dimensions, token rules, refs in every line shape, checks."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batcher import InputError
from batcher._admission.estimate import TokenEstimator, features
from batcher._core.media import (
    Media,
    gemini_image_tokens,
    inline_digest,
    media_problem,
    openai_image_tokens,
)
from batcher._core.sniff import dimensions, sniff
from batcher._jobs import ColumnOptions, Job, JobSource
from batcher._wire.providers import get_provider
from batcher._wire.providers._gemini import build_body as gemini_body
from batcher._wire.providers._openai import build_body as openai_body
from batcher.mock._media import make_png
from tests.helpers import write_jsonl, write_parquet

PNG = make_png("test", 40, 30)


def jpeg(width: int, height: int) -> bytes:
    """The start of a JPEG: SOI, an APP0 (JFIF) segment, then a baseline SOF0 with the size."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp_vp8x(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    chunk += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    chunk = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


WAV = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + b"\x00" * 24
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# --- bytes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime", "dims"),
    [
        (PNG, "image/png", (40, 30)),
        (jpeg(640, 480), "image/jpeg", (640, 480)),
        (gif(17, 9), "image/gif", (17, 9)),
        (webp_vp8x(1000, 700), "image/webp", (1000, 700)),
        (webp_vp8l(300, 200), "image/webp", (300, 200)),
        (WAV, "audio/wav", None),
        (PDF, "application/pdf", None),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4", None),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A isom", None, None),  # audio
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm", None),
        (b"plain text, not an image", None, None),
    ],
)
def test_type_and_size_come_from_the_bytes(
    data: bytes, mime: str | None, dims: tuple[int, int] | None
) -> None:
    assert sniff(data) == mime
    assert dimensions(data) == dims


@given(st.integers(1, 300), st.integers(1, 300), st.text(max_size=20))
def test_generated_pngs_are_valid_and_sized_as_asked(width: int, height: int, seed: str) -> None:
    png = make_png(seed, width, height)
    assert sniff(png) == "image/png" and dimensions(png) == (width, height)
    # the IDAT chunk inflates to one filter byte and width RGB pixels per row
    (length,) = struct.unpack(">I", png[33:37])
    assert png[37:41] == b"IDAT"
    raw = zlib.decompress(png[41 : 41 + length])
    assert len(raw) == height * (1 + 3 * width)
    assert make_png(seed, width, height) == png  # deterministic


# --- token rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "h", "detail", "tokens"),
    [
        (1024, 1024, "high", 765),  # the docs' example: 768 x 768, 4 tiles
        (2048, 4096, "high", 1105),  # 1024 x 2048, then 768 x 1536: 6 tiles
        (4096, 8192, "low", 85),
        (100, 100, None, 255),  # one tile
    ],
)
def test_openai_image_tokens_follow_the_tile_rule(
    w: int, h: int, detail: str | None, tokens: int
) -> None:
    assert openai_image_tokens(w, h, detail) == tokens


@pytest.mark.parametrize(
    ("w", "h", "tokens"),
    [(384, 384, 258), (385, 100, 258), (1000, 1000, 1032), (1536, 769, 258 * 4)],
)
def test_gemini_image_tokens_follow_the_tile_rule(w: int, h: int, tokens: int) -> None:
    assert gemini_image_tokens(w, h) == tokens


def test_the_estimate_counts_media_tokens_and_learns_their_weight() -> None:
    est = TokenEstimator()
    x = features("describe", 258)
    assert est.estimate(x) >= 258 + 2
    for _ in range(30):  # a provider that charges twice the rule
        est.learn(x, 2 * 258 + 2)
        est.learn(features("describe", 0), 2)
    assert abs(est.estimate(x) - (2 * 258 + 2)) <= 3


# --- refs in every line shape ---------------------------------------------------------------------


def _jobs(path: Path, columns: ColumnOptions | None = None, provider: str = "openai") -> list[Job]:
    source = JobSource(path, columns, provider=provider, default_model="m")  # type: ignore[arg-type]
    source.scan()
    return list(source)


def test_every_line_shape_takes_images_relative_to_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    (folder / "pics").mkdir(parents=True)
    (folder / "pics" / "a.png").write_bytes(PNG)
    (folder / "doc.pdf").write_bytes(PDF)
    b64 = base64.b64encode(PNG).decode()
    wav = base64.b64encode(WAV).decode()
    rows: list[dict[str, Any]] = [
        {"id": "p", "prompt": "x", "images": ["pics/a.png"], "files": ["doc.pdf"]},
        {"id": "u", "prompt": "x", "images": [{"url": "https://e.com/a.png", "detail": "low"}]},
        {"id": "d", "prompt": "x", "images": data_uri(PNG)},
        {
            "id": "c",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x"},
                        {"type": "image_url", "image_url": {"url": "pics/a.png"}},
                        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                        {"type": "file", "file": {"file_data": data_uri(PDF, "application/pdf")}},
                    ],
                }
            ],
        },
        {
            "key": "g",
            "request": {
                "contents": [
                    {
                        "parts": [
                            {"text": "x"},
                            {"inlineData": {"mimeType": "image/png", "data": b64}},
                        ]
                    }
                ]
            },
        },
    ]
    jobs = {j.id: j for j in _jobs(write_jsonl(folder / "jobs.jsonl", rows))}
    assert [m.ref for m in jobs["p"].media] == [
        str(folder / "pics" / "a.png"),
        str(folder / "doc.pdf"),
    ]
    assert [m.kind for m in jobs["p"].media] == ["image", "file"]
    assert jobs["u"].media == (Media("https://e.com/a.png", "image", "low"),)
    assert jobs["d"].media[0].is_data_uri
    assert [m.kind for m in jobs["c"].media] == ["image", "file", "file"]
    assert jobs["c"].media[0].ref == str(folder / "pics" / "a.png")
    assert jobs["g"].media == (Media(data_uri(PNG), "image"),)


def test_image_column_takes_bytes_paths_and_lists(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    cols = ColumnOptions(prompt_column="q", id_column="id", image_column="img")
    binary: list[dict[str, Any]] = [
        {"id": "1", "q": "x", "img": [PNG, PNG]},
        {"id": "2", "q": "x", "img": None},
    ]
    jobs = {j.id: j for j in _jobs(write_parquet(tmp_path / "b.parquet", binary), cols)}
    assert jobs["1"].media == (Media("<bytes>", "image", None, PNG),) * 2
    assert jobs["2"].media == ()
    paths = [{"id": "3", "q": "x", "img": ["a.png", str(tmp_path / "a.png")]}]
    [job] = _jobs(write_parquet(tmp_path / "p.parquet", paths), cols)
    assert [m.ref for m in job.media] == [str(tmp_path / "a.png")] * 2


def test_a_bytes_column_holding_one_image_is_one_image(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", [{"prompt": "x", "img": PNG}])
    [job] = _jobs(path, ColumnOptions(image_column="img"))
    assert job.media == (Media("<bytes>", "image", None, PNG),)


def _problems(path: Path, provider: str = "openai") -> list[str]:
    with pytest.raises(InputError) as e:
        JobSource(path, provider=provider, default_model="m").scan()  # type: ignore[arg-type]
    return [f"{p.where}: {p.message}" for p in e.value.problems]


def test_bad_refs_are_named_by_file_and_line_before_anything_is_sent(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "ok.png").write_bytes(PNG)
    (tmp_path / "anim.gif").write_bytes(gif(4, 4))
    path = write_jsonl(
        tmp_path / "jobs.jsonl",
        [
            {"prompt": "x", "images": ["ok.png"]},
            {"prompt": "x", "images": ["missing.png"]},
            {"prompt": "x", "images": ["notes.txt"]},
            {"prompt": "x", "images": ["data:image/png;base64,@@@"]},
            {"prompt": "x", "images": [42]},
            {"prompt": "x", "images": ["anim.gif"]},
        ],
    )
    problems = _problems(path, "gemini")
    assert len(problems) == 5
    assert problems[0].startswith(f"{path}:2: image {tmp_path / 'missing.png'}: no such file")
    assert problems[1].startswith(f"{path}:3:") and "not a type batcher knows" in problems[1]
    assert problems[2].startswith(f"{path}:4:") and "base64" in problems[2]
    assert problems[3].startswith(f"{path}:5:") and "images[0] must be a path" in problems[3]
    assert (
        problems[4].startswith(f"{path}:6:")
        and "image/gif is not a type gemini takes" in (problems[4])
    )


def test_a_job_over_the_inline_limit_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batcher._core.media as media

    monkeypatch.setitem(media.INLINE_LIMIT, "gemini", 1000)
    (tmp_path / "a.png").write_bytes(make_png("big", 200, 200) + b"\x00" * 800)
    path = write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "x", "images": ["a.png"]}])
    [problem] = _problems(path, "gemini")
    assert "inline request limit" in problem and "Files API" in problem


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "dir.png"
    folder.mkdir()  # a directory where a file should be
    why, _ = media_problem(Media(str(folder)), "openai")
    assert why is not None and "cannot read it" in why


# --- on the wire ----------------------------------------------------------------------------------


def test_each_provider_encodes_media_its_own_way(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    rows = [
        {"prompt": "look", "images": ["a.png", "https://e.com/b.png"], "files": [data_uri(WAV)]}
    ]
    [job] = _jobs(write_jsonl(tmp_path / "j.jsonl", rows))
    b64 = base64.b64encode(PNG).decode()
    content = openai_body(job, "m")["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "look"}
    assert content[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}
    assert content[2] == {"type": "image_url", "image_url": {"url": "https://e.com/b.png"}}
    wav = base64.b64encode(WAV).decode()
    assert content[3] == {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
    digest = gemini_body(job, inline_digest)["contents"][0]["parts"]
    assert digest[1]["inlineData"]["mimeType"] == "image/png"
    assert digest[1]["inlineData"]["data"].startswith("sha256:")


def test_the_fingerprint_follows_the_image_bytes(tmp_path: Path) -> None:
    from batcher._wire.providers import fingerprint

    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    [job] = _jobs(write_jsonl(tmp_path / "j.jsonl", [{"prompt": "x", "images": ["a.png"]}]))
    provider = get_provider("gemini")

    def fp() -> str:
        return fingerprint(provider, "m", provider.build(job, "m", inline_digest))

    before = fp()
    assert fp() == before
    image.write_bytes(make_png("other", 40, 30))
    assert fp() != before


def test_an_uploaded_file_is_named_by_its_id_not_sent(tmp_path: Path) -> None:
    from dataclasses import replace

    from batcher._wire.providers._responses import build_body as responses_body

    rows = [{"prompt": "read", "files": [data_uri(WAV)]}]
    [job] = _jobs(write_jsonl(tmp_path / "j.jsonl", rows))
    up = job.with_media(lambda m: replace(m, uploaded=("file-abc", "application/pdf")))
    assert job.media[0].uploaded is None  # the job itself is unchanged
    chat = openai_body(up, "m")["messages"][0]["content"][1]
    assert chat == {"type": "file", "file": {"file_id": "file-abc"}}
    resp = responses_body(up, "m")["input"][0]["content"][1]
    assert resp == {"type": "input_file", "file_id": "file-abc"}
    part = gemini_body(up)["contents"][0]["parts"][1]
    assert part == {"fileData": {"fileUri": "file-abc", "mimeType": "application/pdf"}}
