"""Gemini's OpenAI-compatible route: OpenAI's request and answer, Gemini's limits and 429.

Its 429 is Gemini's RESOURCE_EXHAUSTED body wrapped in a JSON list, as seen from the real
``/v1beta/openai/chat/completions``; like the native API it sends no ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._gemini import gemini_429_body
from ._limits import Rejection
from ._openai import OpenAIChat
from ._wire import Call, LimitStyle, Response, json_response

__all__ = ["GeminiOpenAIChat"]


class GeminiOpenAIChat(OpenAIChat):
    """``POST /v1beta/openai/chat/completions`` as the Gemini API answers it."""

    limit_style: LimitStyle = "gemini"
    reports_limits = False
    token_rule = "gemini"

    def __init__(self, *, free_tier: bool) -> None:
        self.free_tier = free_tier

    def rate_limited(self, call: Call, why: Rejection, headers: Mapping[str, str]) -> Response:
        return json_response(429, [gemini_429_body(call.model, why, self.free_tier)])
