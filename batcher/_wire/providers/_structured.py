"""A provider that asks for a run's output schema and checks every answer against it."""

from __future__ import annotations

from dataclasses import replace

from ..._config.schema import OutputSchema
from ..._core.completion import Completion
from ..._core.media import Inline
from ..._jobs import Job
from ._base import Answer, Provider, RequestSpec

__all__ = ["SchemaProvider"]


class SchemaProvider:
    """A provider whose requests ask for ``schema`` and whose answers are checked against it.

    Wrapping the provider puts the schema in every path that builds a request (online, batch
    lines, the fingerprint ``--redo-changed`` compares, so a changed schema is a changed job) and
    every path that reads an answer; an answer that does not fit raises ``InvalidOutput``, which
    the retry policy (or the batch executor) retries like any retryable failure."""

    def __init__(self, inner: Provider, schema: OutputSchema) -> None:
        self.inner = inner
        self.schema = schema
        self.name = inner.name
        self.default_base_url = inner.default_base_url
        self.key_envs = inner.key_envs
        self.per_second_limits = inner.per_second_limits
        self.charges_output = inner.charges_output

    def auth_headers(self, key: str) -> dict[str, str]:
        return self.inner.auth_headers(key)

    def build(self, job: Job, model: str, *inline: Inline) -> RequestSpec:
        spec = self.inner.build(job, model, *inline)
        responses = spec.path == "responses"  # OpenAI's Responses API: text.format
        return replace(spec, body=self.schema.request(self.name, spec.body, responses=responses))

    def parse(self, response: Answer) -> Completion:
        completion = self.inner.parse(response)
        return replace(completion, parsed=self.schema.check(completion))
