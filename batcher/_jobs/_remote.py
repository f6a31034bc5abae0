"""Input files where they live: ``s3://``, ``gs://``, ``az://``, ``hf://`` and ``http(s)://`` URLs,
read through ``pyarrow.fs`` as local files are read (Parquet a row group at a time, by ranges;
JSONL as a stream), a glob (``s3://bucket/prefix/*.parquet``) listed once.

S3, GCS and Azure are pyarrow's own filesystems (in its wheel: nothing more to install); the Hub
(``huggingface_hub``'s ``HfFileSystem``) and the web (``fsspec``'s ``HTTPFileSystem``) are fsspec
filesystems seen through pyarrow's ``FSSpecHandler`` (``_core.stores``), imported only when such
a URL is given. A file is named, in messages, ids and ``run.json``, by its URL without the user,
password and query it may carry (``shown_url``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .._core.errors import InputError, InputProblem
from .._core.stores import filesystem, shown_url

__all__ = ["RemoteFile", "expand"]

_GLOB = "*?["


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
            if info.type == pafs.FileType.Directory:
                hint = f"a folder: name its files with a glob, e.g. {shown.rstrip('/')}/*.parquet"
                raise InputError([InputProblem(shown, hint)])
            if info.type != pafs.FileType.File:
                raise InputError([InputProblem(shown, "no such file")])
            return [RemoteFile(shown, path, fs)]
        first = min(path.index(c) for c in _GLOB if c in path)
        base = path[:first].rpartition("/")[0]
        listed = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except InputError:
        raise
    except ImportError as e:  # the fsspec filesystems: the Hub's, the web's
        needs = f"needs {e.name}: pip install 'batcher[hf]'"
        raise InputError([InputProblem(shown, needs)]) from None
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
    scheme = shown.partition("://")[0]
    return [RemoteFile(f"{scheme}://{p}", p, fs) for p in found]
