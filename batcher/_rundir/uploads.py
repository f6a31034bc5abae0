"""``DIR/uploads.jsonl``: the files a run uploaded through a provider's Files API, for reruns.

An append-only log, one JSON object a line:

    {"digest", "account", "ref", "name", "mime", "expires", "at"}

``digest`` is the SHA-256 of the file's bytes, ``account`` whose files they are (the endpoint and
its key's source, never a key), ``ref`` what a request names it by (OpenAI's file id, Gemini's
uri), ``expires`` when the provider drops it (epoch seconds, or null). A rerun within a file's
lifetime names it again instead of uploading it; the last line for a digest and account wins. A
torn last line (killed mid-write) is dropped: that upload is made again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["UploadLog", "UploadRecord"]

NAME = "uploads.jsonl"


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One file uploaded: see the module's docstring for the fields."""

    digest: str
    account: str
    ref: str
    name: str
    mime: str
    expires: float | None
    at: float


class UploadLog:
    """The uploads recorded in ``DIR/uploads.jsonl``, read once, appended to as files go up."""

    def __init__(self, out: Path | None) -> None:
        self.path = None if out is None else out / NAME
        self.known: dict[tuple[str, str], UploadRecord] = {}  # (digest, account) -> latest
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = UploadRecord(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a torn or foreign line: that file is uploaded again
                self.known[rec.digest, rec.account] = rec

    def find(self, digest: str, account: str, now: float, margin: float) -> UploadRecord | None:
        """The file uploaded of ``digest`` for ``account`` that lives ``margin`` seconds more."""
        rec = self.known.get((digest, account))
        if rec is None or (rec.expires is not None and rec.expires - margin <= now):
            return None
        return rec

    def add(self, rec: UploadRecord) -> None:
        """Record an upload (flushed; an upload lost to a crash costs only its bytes again)."""
        self.known[rec.digest, rec.account] = rec
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(rec), separators=(",", ":")) + "\n")

    def forget(self, ref: str) -> None:
        """Drop the record naming ``ref`` (the provider said it has no such file)."""
        for key, rec in list(self.known.items()):
            if rec.ref == ref:
                del self.known[key]
