"""Input files where they live: ``s3://``, ``gs://``, ``az://``, ``hf://`` and ``http(s)://`` URLs,
read through ``pyarrow.fs`` as local files are read (Parquet a row group at a time, by ranges;
JSONL as a stream), a glob (``s3://bucket/prefix/*.parquet``) listed once.

S3, GCS and Azure are pyarrow's own filesystems (in its wheel: nothing more to install); the Hub
(``huggingface_hub``'s ``HfFileSystem``) and the web (``fsspec``'s ``HTTPFileSystem``) are fsspec
filesystems seen through pyarrow's ``FSSpecHandler``, imported only when such a URL is given.
Credentials come from each one's usual environment and configuration (``AWS_*`` and
``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, ``HF_TOKEN``); a URL's own
user, password and query (a signed URL's signature) are used to read it but never shown: a file
is named, in messages, ids and ``run.json``, by its URL without them.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._core.errors import InputError, InputProblem

__all__ = ["RemoteFile", "expand", "filesystem", "is_url", "shown_url"]

_SCHEMES = ("s3", "gs", "gcs", "az", "hf", "http", "https")
_GLOB = "*?["


def is_url(text: str) -> bool:
    """``text`` names a file by a URL batcher reads (not a local path)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in _SCHEMES


def shown_url(url: str) -> str:
    """``url`` as it may be shown, logged and recorded: without a user, password, query or
    fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One input file in object storage, on the Hub or on the web."""

    url: str
    """The file's URL as shown (``shown_url``): what its rows' places and ids name."""
    path: str
    """Its path in ``fs``."""
    fs: Any = field(compare=False, repr=False)
    """The ``pyarrow.fs.FileSystem`` it is read through."""

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rpartition("/")[2]

    def open_random(self) -> Any:
        """The file for reads by range (a Parquet file's footer, then its row groups)."""
        return self.fs.open_input_file(self.path)

    @contextmanager
    def open_lines(self) -> Iterator[Iterator[bytes]]:
        """The file's lines, streamed (gunzipped if its name ends in .gz)."""
        compression = "gzip" if self.name.endswith(".gz") else None
        with self.fs.open_input_stream(self.path, compression=compression) as stream:
            yield _lines(stream)


def _lines(stream: Any, size: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a byte stream read ``size`` bytes at a time (pyarrow's streams have no
    ``readline``)."""
    rest = b""
    while chunk := stream.read(size):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def expand(url: str) -> list[RemoteFile]:
    """The files ``url`` names: itself, or those its glob (``*``, ``?``, ``[...]`` in its path;
    ``**`` across folders) matches, sorted. Raises ``InputError`` if it names none or its store
    cannot be listed."""
    import pyarrow.fs as pafs

    shown = shown_url(url)
    try:
        fs, path = filesystem(url)
        web = url.lower().startswith(("http://", "https://"))
        if web or not any(c in path for c in _GLOB):
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                raise InputError([InputProblem(shown, "no such file")])
            return [RemoteFile(shown, path, fs)]
        first = min(path.index(c) for c in _GLOB if c in path)
        base = path[:first].rpartition("/")[0]
        listed = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except InputError:
        raise
    except ImportError as e:
        extra = "hf" if url.lower().startswith("hf://") else "s3"
        raise InputError(
            [InputProblem(shown, f"needs {e.name}: pip install 'batcher[{extra}]'")]
        ) from None
    except (OSError, ValueError) as e:
        raise InputError([InputProblem(shown, f"cannot read: {e}")]) from None
    depth = None if "**" in path else path.count("/")
    found = sorted(
        i.path
        for i in listed
        if i.type == pafs.FileType.File
        and fnmatch.fnmatchcase(i.path, path)
        and (depth is None or i.path.count("/") == depth)
    )
    if not found:
        raise InputError([InputProblem(shown, "no file matches")])
    prefix = shown[: len(shown) - len(path)] if shown.endswith(path) else shown.split("://")[0]
    return [RemoteFile(_join(prefix, p), p, fs) for p in found]


def _join(prefix: str, path: str) -> str:
    return prefix + path if prefix.endswith("://") or prefix.endswith("/") else f"{prefix}/{path}"


def filesystem(url: str) -> tuple[Any, str]:
    """(the ``pyarrow.fs`` filesystem ``url`` is read or written through, its path there); a
    local path is the local filesystem's."""
    import pyarrow.fs as pafs

    if not is_url(url):
        return pafs.LocalFileSystem(), os.path.abspath(url)
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "s3" or scheme in ("gs", "gcs"):
        bucket = rest.partition("/")[0]
        # from the bucket alone, so that a glob's characters are not read as a URI's; pyarrow
        # resolves the bucket's region, and honours AWS_ENDPOINT_URL (an S3-compatible store)
        fs, _ = pafs.FileSystem.from_uri(f"{'s3' if scheme == 's3' else 'gs'}://{bucket}")
        return fs, rest
    if scheme == "az":
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get(
            "AZURE_STORAGE_ACCOUNT"
        )
        if not account:
            raise ValueError("az:// needs the storage account in AZURE_STORAGE_ACCOUNT_NAME")
        return pafs.AzureFileSystem(account_name=account), rest
    if scheme == "hf":
        from huggingface_hub import HfFileSystem

        return pafs.PyFileSystem(pafs.FSSpecHandler(HfFileSystem())), rest
    from fsspec.implementations.http import HTTPFileSystem

    return pafs.PyFileSystem(pafs.FSSpecHandler(HTTPFileSystem())), url
