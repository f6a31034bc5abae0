"""What each way through supports: one table, read by every entry point before anything is sent.

A job goes one of three ways: ``online`` (the lanes, one request each), ``batch`` (the providers'
batch APIs; ``--mode auto`` takes both ways), or ``ray`` (online requests from a cluster's
workers). Each row of ``TABLE`` is a capability a run may ask for, the flags that ask for it, and
the ways that cannot do it yet, each with why. ``check`` refuses a run that asks a way for what it
cannot do, naming the flags; the CLI, ``batcher.run`` and the Ray driver all call it, and the
README's table "What combines" is rendered from this one (``markdown``; a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .._config.options import RunOptions
from .._core.errors import UsageError

__all__ = ["TABLE", "WAYS", "Capability", "check", "markdown", "ways"]

WAYS = ("online", "batch", "ray")
"""The ways a job can go, as the table's columns."""

_WAY_FLAGS = {"online": "--mode online", "batch": "--mode batch|auto", "ray": "--ray"}


@dataclass(frozen=True, slots=True)
class Capability:
    """One thing a run may ask for, and the ways that cannot do it (each with why)."""

    name: str
    flags: tuple[str, ...]
    used: Callable[[RunOptions], bool]
    refused: dict[str, str] = field(default_factory=dict)


def _images_out(o: RunOptions) -> bool:
    return o.media.api == "images" or "image" in o.media.modalities


TABLE: tuple[Capability, ...] = (
    Capability("a pool of endpoints", ("--pool",), lambda o: o.pool.pool_file is not None),
    Capability("a spend limit", ("--budget",), lambda o: o.costs.budget is not None),
    Capability("typed outputs", ("--schema",), lambda o: o.requests.schema is not None),
    Capability("images answered", ("--endpoint images", "--modalities text,image"), _images_out),
    Capability("image options", ("--size", "--quality", "--n", "--ipm"),
               lambda o: (o.media.size, o.media.quality, o.media.n, o.media.ipm) != (None,) * 4),
    Capability(
        "embeddings",
        ("--endpoint embeddings", "--dimensions", "--task-type"),
        lambda o: o.media.api == "embeddings",
        refused={
            "ray": "not yet; they go from this process, many inputs packed in each request "
            "(run without --ray)",
        },
    ),
    Capability(
        "OpenAI's Responses API",
        ("--endpoint responses",),
        lambda o: o.media.api == "responses",
    ),
    Capability(
        "files through the Files API",
        ("--upload always",),
        lambda o: o.media.upload == "always",
        refused={
            "ray": "not yet; a cluster's workers send files inline (run without --ray)",
        },
    ),
    # with --ray, batch.run sends them from the driver and joins no cluster (it says so)
    Capability("provider batches", ("--mode batch|auto", "--cancel-batches"),
               lambda o: o.batch.mode != "online" or o.batch.cancel_batches),
)  # fmt: skip
"""Every capability whose support differs by way (the others work on every way)."""


def ways(options: RunOptions, *, ray: bool = False) -> tuple[str, ...]:
    """The ways a run's jobs may go: on a cluster, or by its ``--mode``."""
    if ray:
        return ("ray",)
    return {"online": ("online",), "batch": ("batch",)}.get(options.batch.mode, WAYS[:2])


def check(options: RunOptions, *, ray: bool = False, provider: str | None = None) -> None:
    """``UsageError`` for the first capability ``options`` ask of a way that cannot do it, or
    for options no way can take together (``provider``: the run's first endpoint's wire)."""
    taken = ways(options, ray=ray)
    for cap in TABLE:
        if not cap.used(options):
            continue
        for way in taken:
            why = cap.refused.get(way)
            if why is not None:
                flags = ", ".join(cap.flags)
                raise UsageError(f"{flags} with {_WAY_FLAGS[way]}: {why}")
    media = options.media
    if options.requests.schema is not None and media.api in ("images", "embeddings"):
        raise UsageError(f"--schema asks for JSON answers: the {media.api} API has none")
    if media.api == "embeddings":
        if media.modalities or (media.size, media.quality, media.n, media.ipm) != (None,) * 4:
            raise UsageError("--endpoint embeddings answers vectors: it takes no image options")
        if media.task_type is not None and (provider or options.endpoint.provider) != "gemini":
            raise UsageError("--task-type is Gemini's taskType: use --provider gemini")
    if media.reasoning_effort is not None and (
        media.api in ("images", "embeddings") or (provider or options.endpoint.provider) != "openai"
    ):
        raise UsageError(
            "--reasoning-effort is OpenAI's (chat's reasoning_effort, the Responses API's "
            "reasoning.effort): use --provider openai with --endpoint chat or responses"
        )
    if media.api == "responses":
        if media.modalities or (media.size, media.quality, media.n, media.ipm) != (None,) * 4:
            raise UsageError("--endpoint responses answers text: it takes no image options")
        if (provider or options.endpoint.provider) != "openai":
            raise UsageError(
                "--endpoint responses speaks OpenAI's Responses API: use --provider openai"
            )
    if "image" in media.modalities and (provider or options.endpoint.provider) != "gemini":
        raise UsageError(
            "--modalities text,image sets Gemini's responseModalities: use --provider gemini "
            "(or --endpoint images for OpenAI's images API)"
        )


def markdown() -> str:
    """The table as README shows it."""
    head = "| asks for | flags | online | batch, auto | `--ray` |\n|---|---|---|---|---|\n"
    rows = []
    for cap in TABLE:
        cells = [f"no: {cap.refused[w].split(';')[0]}" if w in cap.refused else "yes" for w in WAYS]
        flags = ", ".join(f"`{f}`" for f in cap.flags)
        row = f"| {cap.name} | {flags} | {' | '.join(cells)} |"
        rows.append(row.replace("batch|auto", "batch\\|auto"))
    return head + "\n".join(rows) + "\n"
