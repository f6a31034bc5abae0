"""A rough, dependency-free token count, used by the mock provider and for first estimates.

Words count about one token per four characters, punctuation one each, and CJK (and other
ideographic or kana) characters one each: a fixed characters-per-token rule breaks on such text.
"""

from __future__ import annotations

import re

__all__ = ["count_tokens"]

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}\W]+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Count tokens in ``text`` the way the mock provider does."""
    n = 0
    for m in _TOKEN.finditer(text):
        size = m.end() - m.start()
        n += 1 if size <= 4 else (size + 3) // 4
    return n
