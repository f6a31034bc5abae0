"""What the mock answers: text derived from the model and the prompt, cut to ``max_tokens``.

Deterministic, so a test can check what it got against what it sent; token counts come from
``count_tokens``, the mock's own tokenizer.
"""

from __future__ import annotations

import hashlib

from .._core.tokens import count_tokens
from ._wire import Call, Reply

__all__ = ["mock_reply", "reply_to"]


def mock_reply(model: str, prompt: str) -> str:
    """The text the mock answers for ``prompt`` (the last user turn) on ``model``."""
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:10]
    return f"mock-{digest}: {prompt[:120]}"


def _cut(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``text`` to ``max_tokens`` words, to act out a length-limited answer."""
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, False
    out: list[str] = []
    for w in text.split(" "):
        if count_tokens(" ".join([*out, w])) > max_tokens:
            break
        out.append(w)
    return " ".join(out), True


def reply_to(call: Call, input_tokens: int, text: str | None = None) -> Reply:
    """The answer to ``call``, whose prompt counts ``input_tokens``: ``text`` if given (a
    structured answer), else the echo of ``mock_reply``. A call's reasoning tokens are spent
    first: ``max_tokens`` bounds them and the text together."""
    if text is None:
        text = mock_reply(call.model, call.last_user)
    thought = call.reasoning_tokens
    room = call.max_tokens
    if room is not None and thought >= room:
        return Reply("", True, input_tokens, room, room)
    text, cut = _cut(text, None if room is None else room - thought)
    return Reply(text, cut, input_tokens, count_tokens(text) + thought, thought)
