"""Where files live besides the local disk: which filesystem of ``pyarrow.fs`` reads (or writes) a
URL, and how a URL may be shown.

S3, GCS and Azure are pyarrow's own filesystems (in its wheel: nothing more to install); the Hub
(``huggingface_hub``'s ``HfFileSystem``) and the web (``fsspec``'s ``HTTPFileSystem``) are fsspec
filesystems seen through pyarrow's ``FSSpecHandler``, imported only when such a URL is given.
Credentials come from each one's usual environment and configuration (``AWS_*`` and ``~/.aws``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, ``HF_TOKEN``), never from batcher; a
URL's own user, password and query (a signed URL's signature) are used to read it but never shown.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["STORES", "filesystem", "is_url", "read_stored", "shown_url"]

STORES = ("s3://", "gs://", "gcs://", "az://", "hf://")
"""The object stores' URL schemes (the web's are http:// and https://)."""

_SCHEMES = ("s3", "gs", "gcs", "az", "hf", "http", "https")

_READ_LIMIT = 20 * 1024 * 1024
"""The most of a stored image or file ``read_stored`` reads: what ``media.fetch`` takes of a URL."""


def is_url(text: str) -> bool:
    """``text`` names a file by a URL batcher reads (not a local path)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in _SCHEMES


def shown_url(url: str) -> str:
    """``url`` as it may be shown, logged and recorded: without a user or password, and for a web
    URL without its query or fragment (a signed URL's signature). A store's key is kept whole: a
    ``?`` or ``#`` in it is part of the name (or a glob's)."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() in ("http", "https"):
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    authority, slash, key = rest.partition("/")
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{key}"


def filesystem(url: str) -> tuple[Any, str]:
    """(the ``pyarrow.fs`` filesystem ``url`` is read or written through, its path there); a
    local path is the local filesystem's."""
    import pyarrow.fs as pafs

    if not is_url(url):
        return pafs.LocalFileSystem(), os.path.abspath(url)
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    authority, slash, key = rest.partition("/")
    if scheme == "s3" or scheme in ("gs", "gcs"):
        # from the bucket alone (and credentials given in it), so that a glob's characters are
        # not read as a URI's; pyarrow resolves the bucket's region, and honours
        # AWS_ENDPOINT_URL (an S3-compatible store)
        fs, _ = pafs.FileSystem.from_uri(f"{'s3' if scheme == 's3' else 'gs'}://{authority}")
        return fs, authority.rpartition("@")[2] + slash + key
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


def read_stored(url: str) -> bytes:
    """The bytes of one object in a store (an image a job sends, read when it is sent): at most
    20 MB; ``OSError`` if it cannot be read."""
    fs, path = filesystem(url)
    with fs.open_input_stream(path) as f:
        data: bytes = f.read(_READ_LIMIT + 1)
    if len(data) > _READ_LIMIT:
        raise OSError(f"{shown_url(url)} is larger than {_READ_LIMIT // 2**20} MB")
    return data
