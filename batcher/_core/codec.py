"""JSON on the hot path (request bodies, answers, journal lines, job lines), through orjson.

orjson encodes a result's journal line in a tenth of the standard library's time and decodes an
answer in a quarter (measured in ``benchmarks/overhead.py``'s setting); at thousands of requests a
second that is a tenth of batcher's own CPU. Its output is compact UTF-8 like ours was; what it
cannot encode (integers beyond 64 bits) goes through the standard library instead, and what it
refuses to decode (NaN, which is not JSON) is refused. ``canonical`` (what fingerprints hash)
must spell everything exactly as the standard library did, since every stored fingerprint was
made that way: orjson's text is used only where no float in it can be spelled differently.

NaN and infinities, which the standard library reads and writes as non-JSON tokens, are refused
when read (``loads``) and written as ``null``.
"""

from __future__ import annotations

import json
import re
from array import array
from typing import Any

import orjson

__all__ = ["JSONDecodeError", "canonical", "dumps", "loads"]

JSONDecodeError = orjson.JSONDecodeError
"""What ``loads`` raises for text that is not JSON (a ``ValueError``, and the standard
library's ``json.JSONDecodeError`` too)."""


def _plain(value: Any) -> Any:
    """What JSON holds for a value neither encoder knows: an ``array`` of numbers (an embedding,
    held as float32 in memory, a quarter of a list of floats) as a list."""
    if isinstance(value, array):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_FALLBACK = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_plain
)


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON. What orjson cannot encode (integers beyond 64 bits, keys
    that are not strings) goes by the standard library's rules, errors included; an ``array`` as
    a list. A float that is not finite becomes ``null``: batcher's readers refuse those in jobs,
    so none reaches here."""
    try:
        return orjson.dumps(value, default=_plain)
    except TypeError:
        return _FALLBACK.encode(value).encode()


_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def canonical(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, UTF-8
    encoded, byte for byte; through orjson (five times faster) wherever that is the same text.
    A float that is not finite has no JSON spelling; the readers refuse them in jobs, and a
    request holding one was never sent, so no stored fingerprint spells one."""
    try:
        fast = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        fast = None
    # orjson spells a float as the standard library does except below 1e-4, where it writes
    # either a negative exponent its own way (1e-7 for 1e-07) or the number out (0.00001 for
    # 1e-05). Either spelling, found anywhere (even inside a string), sends the text to the
    # standard library.
    if fast is None or b"e-" in fast or b"0.0000" in fast:
        return _CANONICAL.encode(value).encode()
    return fast


_LONG_NUMBER = re.compile(rb"\d{20}")


def loads(data: bytes | str, *, exact: bool = True) -> Any:
    """The value of a JSON document (``JSONDecodeError`` if it is not one, bad UTF-8 included).
    orjson reads an integer beyond 64 bits as a float; unless ``exact`` is off (an answer, of
    which only small counts are read), a document with a run of 20 digits (rare: such an
    integer, or a long number in a text) is read again by the standard library, exactly."""
    value = orjson.loads(data)
    if not exact:
        return value
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_NUMBER.search(raw) is not None:
        return json.loads(raw)
    return value
