"""Files a request names by id (uploaded through a Files API) rather than carrying inline.

The wire formats check a request's parts without the mock's state at hand; the pipeline sets
``NAMED`` to its file store's lookup for the request it is answering, so a part naming a file
that was never uploaded, or has expired, is refused as the provider refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from ._media import BadMedia, Described, describe_bytes

__all__ = ["NAMED", "describe_named"]

NAMED: ContextVar[Callable[[str], tuple[str, bytes] | None]] = ContextVar(
    "NAMED", default=lambda file_id: None
)


def describe_named(file_id: object, provider: str, detail: str | None = None) -> Described:
    """The file uploaded as ``file_id``, described as an inline one is; ``BadMedia`` if there is
    no such file (never uploaded, or expired)."""
    found = NAMED.get()(file_id) if isinstance(file_id, str) else None
    if found is None:
        raise BadMedia(f"No such File object: {file_id}")
    mime, data = found
    return describe_bytes(data, provider, mime, detail)
