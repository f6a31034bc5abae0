"""Compact sets of job ids, so that a million finished jobs fit in a few megabytes.

An id is kept as its 64-bit hash in a sorted ``array('Q')`` (8 bytes an id, against about a
hundred for a ``set`` of strings) and looked up by bisection. numpy sorts the raw keys, so
building a set of a million ids never holds a million Python ints. Two different ids
share a hash with a probability of about n²/2⁶⁵ (3·10⁻⁸ for a million ids); the hash is Python's
own, so the sets live only as long as the process.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

__all__ = ["IdBag", "IdMap", "IdSet", "duplicates", "id_hash"]

_MASK = (1 << 64) - 1


def id_hash(job_id: str) -> int:
    """The 64-bit key of an id (Python's string hash, cached on the string)."""
    return hash(job_id) & _MASK


def _raw(values: Any) -> memoryview:
    """A numpy array's bytes, without a copy."""
    return memoryview(values).cast("B")


def _sorted_unique(values: array[int]) -> array[int]:
    """``values`` sorted, each once: sorted in place by numpy, so the peak is a few copies of
    the raw 8-byte keys, never a Python int per id."""
    out = array("Q")
    if not values:
        return out
    import numpy as np

    keys = np.frombuffer(values, dtype=np.uint64).copy()
    keys.sort()
    out.frombytes(_raw(keys[np.concatenate(([True], keys[1:] != keys[:-1]))]))
    return out


class IdSet:
    """An immutable set of ids."""

    def __init__(self, hashes: Iterable[int] | array[int] = ()) -> None:
        values = hashes if isinstance(hashes, array) else array("Q", hashes)
        self._keys = _sorted_unique(values)

    @classmethod
    def of(cls, ids: Iterable[str]) -> IdSet:
        return cls(array("Q", (id_hash(i) for i in ids)))

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.has_hash(id_hash(job_id))

    def has_hash(self, key: int) -> bool:
        keys = self._keys
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def __len__(self) -> int:
        return len(self._keys)


class IdBag:
    """A set of ids that grows: the latest ids' hashes in a Python set, merged into a sorted
    array (8 bytes an id) every ``MERGE`` of them, so a million ids take about 8 MB, not 100."""

    MERGE = 65_536

    def __init__(self) -> None:
        self._merged = IdSet()
        self._recent: set[int] = set()

    def add(self, job_id: str) -> None:
        self.add_hash(id_hash(job_id))

    def add_hash(self, key: int) -> None:
        self._recent.add(key)
        if len(self._recent) >= self.MERGE:
            keys = array("Q", self._merged._keys)
            keys.extend(self._recent)
            self._merged, self._recent = IdSet(keys), set()

    def __contains__(self, job_id: object) -> bool:
        if not isinstance(job_id, str):
            return False
        key = id_hash(job_id)
        return key in self._recent or self._merged.has_hash(key)


class IdMap:
    """An immutable map from ids (by hash) to 64-bit values (request fingerprints)."""

    def __init__(self, keys: array[int] | None = None, values: array[int] | None = None) -> None:
        self._keys, self._values = array("Q"), array("Q")
        if not keys or values is None:
            return  # a first run: no numpy to import (a tenth of a second of start-up)
        import numpy as np

        k = np.frombuffer(keys, dtype=np.uint64)
        order = np.argsort(k, kind="stable")
        self._keys.frombytes(_raw(k[order]))
        self._values.frombytes(_raw(np.frombuffer(values, dtype=np.uint64)[order]))

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
    import numpy as np

    if len(hashes) < 2:
        return set()
    keys = np.frombuffer(hashes, dtype=np.uint64).copy()
    keys.sort()
    return {int(k) for k in keys[1:][keys[1:] == keys[:-1]]}
