"""The keywords ``RunOptions``, ``batcher.run`` and ``batcher.run_sync`` take, typed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from .._jobs import ColumnOptions, ProviderName
    from ..mock import MockConfig
    from .cost_options import BatchOptions, CostOptions
    from .media_options import MediaOptions
    from .options import EndpointOptions, RequestOptions, ResumeOptions
    from .quota_options import LimitOptions, PoolOptions

__all__ = ["RunKeywords"]


class RunKeywords(TypedDict, total=False):
    """The keywords ``RunOptions``, ``batcher.run`` and ``batcher.run_sync`` take: each option
    group whole, or any option by its own name (each the CLI flag of the same name). Type
    checkers hold a call to these names and types; ``tests/test_api.py`` holds this list to the
    groups' fields."""

    endpoint: EndpointOptions
    requests: RequestOptions
    limits: LimitOptions
    resume: ResumeOptions
    columns: ColumnOptions
    costs: CostOptions
    batch: BatchOptions
    media: MediaOptions
    pool: PoolOptions
    provider: ProviderName
    base_url: str | None
    api_key: str | None
    api_key_env: str | None
    mock: str | MockConfig | None
    model: str | None
    max_concurrency: int | None
    max_attempts: int
    timeout: float
    max_outage: float
    request_deadline: float | None
    proxy: str | None
    no_proxy: bool
    ca_bundle: str | None
    system_trust: bool
    grace: float
    ray: str | None
    schema: Any
    tier: str | None
    rpm: int | None
    tpm: int | None
    rpd: int | None
    limits_file: str | None
    on_daily_limit: Literal["wait", "exit"]
    quota_day: Literal["pacific", "rolling"]
    retry_errors: bool
    redo_changed: bool
    prompt_column: str | None
    prompt_template: str | None
    id_column: str | None
    image_column: str | None
    prices_file: str | None
    budget: float | None
    mode: Literal["online", "batch", "auto"]
    batch_deadline: float
    batch_min: int
    no_wait: bool
    cancel_batches: bool
    batch_queue_tokens: int | None
    poll_interval: float
    modalities: tuple[str, ...]
    api: Literal["chat", "responses", "images", "embeddings"]
    size: str | None
    quality: str | None
    n: int | None
    ipm: int | None
    dimensions: int | None
    task_type: str | None
    reasoning_effort: str | None
    upload: Literal["auto", "always", "never"]
    pool_file: str | None
    quota_store: str | None
