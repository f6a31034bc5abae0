"""How the mock behaves: its latency, the seed of its randomness, its limits and its faults."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._config.limits import LimitTable
from ._faults import Faults

__all__ = ["MockConfig"]


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How the mock behaves: answer latency (a uniform range, ms), the seed of its randomness,
    and the rate limits it enforces per model (a tier preset and/or limits for every model)."""

    latency_ms: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    limits: LimitTable = field(default_factory=LimitTable)
    faults: Faults = field(default_factory=Faults)
    batch_delay: float = 0.0
    """Seconds (of the mock's clock) a batch runs before its lines are answered."""
    batch_gradual: bool = False
    """Batch lines answered one by one over ``batch_delay`` (line k of n once k/n of it has
    passed) instead of all at its end, and a batch cancelled meanwhile keeps the lines answered
    by then, in its output, as a provider's batch does."""
    batch_omit_keys: bool = False
    """Gemini inline batch responses without their ``metadata.key`` (seen from the service)."""
    openai_per_second: bool = True
    """OpenAI-style limits quantized per second (OpenAI's own), or over a sliding minute (a
    compatible server that does not quantize)."""
    openai_window: float = 1.0
    """Seconds per quantum of OpenAI-style limits: 1 (OpenAI's own), or 10 as Azure OpenAI may
    evaluate them (60,000 TPM is then 10,000 tokens in each clock 10 s)."""
    token_scale: float = 1.0
    """The prompt tokens counted (and reported) are this many times the mock's own tokenizer's,
    rounded up: a vocabulary unlike any starting estimate, which a client has to learn."""
    file_ttl: float = 48 * 3600.0
    """Seconds (of the mock's clock) an uploaded file lives: Gemini keeps files 48 h
    (https://ai.google.dev/gemini-api/docs/files); a test sets a few seconds to see a rerun
    upload again once they have expired. After it, a request naming the file is refused."""
    file_processing: float = 0.0
    """Seconds (of the mock's clock) a video uploaded to Gemini's Files API stays ``PROCESSING``
    before it is ``ACTIVE`` (``FAILED`` if its bytes hold ``[[file:fail]]``), as Gemini's does
    (https://ai.google.dev/api/files#State); a request naming it meanwhile is refused."""
    projects: dict[str, str] = field(default_factory=dict)
    """Key -> project: keys of one project share its limits, a project of one key has its own;
    keys not named here share one project."""

    def project_of(self, key: str) -> str:
        """The project whose limits ``key`` spends."""
        return self.projects.get(key, "")

    @property
    def free_tier(self) -> bool:
        """Whether the limits are a free tier's (Gemini names its quotas differently then)."""
        tier = self.limits.tier
        return tier is not None and tier.name.endswith("-free")
