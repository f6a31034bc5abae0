"""An S3-compatible server on a free loopback port (moto's server mode, ``moto[server]``), that
batcher reaches through the same code as a real bucket: pyarrow's S3 filesystem, pointed at it by
the standard ``AWS_ENDPOINT_URL``.

Without moto the tests skip, except under CI (``CI`` set), where they fail: the dev extra installs
it, so a server that cannot start there is a broken install, not a reason to skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.redis_server import _free_port

SECRET = "s3cr3t-Never-Shown-7f3a9c"
"""The secret access key the tests' server is reached with: no output may ever hold it."""


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the S3 test server (moto[server], in the dev extra)")
    pytest.skip(f"{why} (pip install 'moto[server]')")


class S3Server:
    """A moto server process; ``env`` reaches it as AWS's own tools would, ``client`` is boto3's
    client of it (for the tests' own uploads and checks)."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing-key",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no wait on a metadata service that is not here
        }
        import boto3

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing-key",
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A fresh moto server for the duration of the block."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as e:
        _unavailable(f"moto's server is not installed ({e})")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"moto's server did not start (exit {proc.poll()})")
                time.sleep(0.05)
        yield S3Server(port, proc)
    finally:
        proc.kill()
        proc.wait(10)
