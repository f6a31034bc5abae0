"""Compact sets of job ids, so that a million finished jobs fit in a few megabytes.

An id is kept as its 64-bit hash in a sorted ``array('Q')`` (8 bytes an id, against about a
hundred for a ``set`` of strings) and looked up by bisection. Two different ids share a hash with
a probability of about n²/2⁶⁵ (3·10⁻⁸ for a million ids); the hash is Python's own, so the sets
live only as long as the process.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import pairwise

__all__ = ["IdMap", "IdSet", "duplicates", "id_hash"]

_MASK = (1 << 64) - 1


def id_hash(job_id: str) -> int:
    """The 64-bit key of an id (Python's string hash, cached on the string)."""
    return hash(job_id) & _MASK


class IdSet:
    """An immutable set of ids."""

    def __init__(self, hashes: Iterable[int] = ()) -> None:
        self._keys = array("Q", sorted(set(hashes)))

    @classmethod
    def of(cls, ids: Iterable[str]) -> IdSet:
        return cls(id_hash(i) for i in ids)

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.has_hash(id_hash(job_id))

    def has_hash(self, key: int) -> bool:
        keys = self._keys
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def __len__(self) -> int:
        return len(self._keys)


class IdMap:
    """An immutable map from ids to 64-bit values (request fingerprints)."""

    def __init__(self, items: Iterable[tuple[int, int]] = ()) -> None:
        pairs = sorted(items)
        self._keys = array("Q", (k for k, _ in pairs))
        self._values = array("Q", (v for _, v in pairs))

    def get(self, job_id: str) -> int | None:
        key = id_hash(job_id)
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return int(self._values[i])
        return None

    def hashes(self) -> array[int]:
        return self._keys

    def __len__(self) -> int:
        return len(self._keys)


def duplicates(hashes: array[int]) -> set[int]:
    """The hashes that occur more than once."""
    ordered = sorted(hashes)
    return {a for a, b in pairwise(ordered) if a == b}
