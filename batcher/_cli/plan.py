"""``batcher plan``: how long a run will take under a tier, before anything is sent."""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass

from .._admission.estimate import TokenEstimator, features
from .._config.cost_options import CostOptions
from .._config.limits import Limits, LimitTable, load_tiers
from .._config.prices import Price, Prices, usd
from .._config.quota_options import LimitOptions
from .._config.schema import OutputSchema
from .._core.media import job_media_tokens
from .._engine.embed import Packer, PackLimits
from .._jobs import ColumnOptions, JobSource
from .._wire.providers import get_provider, is_embedder
from .exits import EXIT_OK
from .flags import group_from_args

__all__ = ["ModelPlan", "describe_plan", "make_plan", "plan_command"]


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """One model's share of the run and the time its limits give it."""

    model: str
    jobs: int
    input_tokens: int
    tpm_tokens: int
    limits: Limits
    max_output_tokens: int | None = None
    """The sum of the jobs' ``max_tokens``, None if some job sets none."""
    price: Price | None = None
    packed: int | None = None
    """Requests the jobs go in when packed many to a request (embeddings); None: one a job."""

    @property
    def requests(self) -> int:
        """Requests the model's jobs take."""
        return self.jobs if self.packed is None else self.packed

    def cost(self, *, batch: bool = False) -> tuple[float, float | None] | None:
        """(Dollars for the input alone, at most with every answer ``max_tokens`` long or None
        if that is unbounded); None if the model has no known price."""
        if self.price is None:
            return None
        low = self.price.cost(self.input_tokens, 0, batch=batch)
        if self.max_output_tokens is None:
            return low, None
        return low, self.price.cost(self.input_tokens, self.max_output_tokens, batch=batch)

    @property
    def minutes_by(self) -> dict[str, float]:
        """Minutes each per-minute limit needs for this model's jobs."""
        out = {}
        if self.limits.rpm:
            out["RPM"] = self.requests / self.limits.rpm
        if self.limits.tpm:
            out["TPM"] = self.tpm_tokens / self.limits.tpm
        return out

    @property
    def no_quota(self) -> bool:
        """The tier gives this model no daily quota at all (RPD 0)."""
        return self.limits.rpd == 0

    @property
    def days(self) -> int | None:
        """Quota days the run spans (None: no daily limit, or none at all)."""
        rpd = self.limits.rpd
        return math.ceil(self.requests / rpd) if rpd else None

    @property
    def binding(self) -> str:
        if self.no_quota or (self.days or 0) > 1:
            return "RPD"
        by = self.minutes_by
        return max(by, key=by.__getitem__) if by else "none"

    @property
    def minutes(self) -> float | None:
        """Minutes of sending (None: no per-minute limit known), not counting days of waiting."""
        by = self.minutes_by
        return max(by.values()) if by else None


def make_plan(
    source: JobSource,
    *,
    limits: LimitTable,
    prices: Prices | None = None,
    schema: OutputSchema | None = None,
    packs: PackLimits | None = None,
) -> list[ModelPlan]:
    """Read every job (checking it, as a run would) and sum its work per model. A ``schema``
    counts in every request's input tokens: both providers bill it as input (OpenAI turns it
    into part of the prompt; Gemini: "the size of the response schema counts towards the input
    token limit", https://ai.google.dev/gemini-api/docs/structured-output). ``packs``: the jobs
    are embeddings, packed many to a request as a run packs them (``Packer``) within these
    limits."""
    source.scan()
    provider = source.provider
    estimator = TokenEstimator()
    jobs: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    charged: dict[str, int] = defaultdict(int)
    outputs: dict[str, int | None] = defaultdict(int)
    requests: dict[str, int] = defaultdict(int)
    packer = None
    if packs is not None:
        packer = Packer(
            lambda model: packs,
            lambda job: estimator.estimate(features(job.text), cautious=True),
        )
    for job in source:
        model = job.model
        assert model is not None  # the scan refused jobs without one
        text = job.text if schema is None else f"{job.text}\n{schema.text}"
        # images and files by the provider's rule (their headers read, as a run would)
        media = job_media_tokens(job.media, provider) if job.media else 0
        est = estimator.estimate(features(text, media))
        jobs[model] += 1
        tokens[model] += est
        charged[model] += est + ((job.max_tokens or 0) if provider == "openai" else 0)
        so_far = outputs[model]
        outputs[model] = (
            None
            if so_far is None or (job.max_tokens is None and packer is None)  # a vector: 0
            else so_far + (job.max_tokens or 0)
        )
        if packer is not None:
            requests[model] += len(packer.add(job))
    for pack in packer.flush() if packer is not None else ():
        requests[pack[0].model or ""] += 1
    return [
        ModelPlan(
            m,
            jobs[m],
            tokens[m],
            charged[m],
            limits.for_model(m),
            outputs[m],
            prices.price(m) if prices is not None else None,
            requests[m] if packer is not None else None,
        )
        for m in sorted(jobs)
    ]


def describe_plan(plans: list[ModelPlan], tier: str = "") -> list[str]:
    """The plan as ``batcher plan`` prints it; ``tier`` says under which preset, if any."""
    total = sum(p.jobs for p in plans)
    tokens = sum(p.input_tokens for p in plans)
    out = [f"{total:,} jobs, about {tokens:,} input tokens{tier}"]
    for p in plans:
        out.append(f"\n{p.model}: {p.jobs:,} jobs, about {p.input_tokens:,} input tokens")
        if p.packed is not None:
            out.append(f"  packed: {p.packed:,} requests (many inputs to a request)")
        out.append(f"  limits: {p.limits.describe()}")
        for name, minutes in p.minutes_by.items():
            out.append(f"  {name} alone: {_minutes(minutes)}")
        if p.no_quota:
            out.append("  RPD is 0: this tier gives the model no quota; nothing can be sent")
        elif p.days and p.days > 1:
            out.append(f"  RPD binds: {p.days} quota days ({p.limits.rpd:,} requests a day)")
        elif p.minutes is not None:
            out.append(f"  binding: {p.binding}; about {_minutes(p.minutes)}")
            if p.minutes > 0 and p.packed is not None:
                out.append(f"  inputs per minute at that pace: about {p.jobs / p.minutes:,.0f}")
            if p.minutes > 0:
                per_second = p.requests / (p.minutes * 60)
                short, long = (math.ceil(per_second * s) for s in (3, 20))
                out.append(
                    f"  in flight at that pace: about {short:,} with answers of 3 s, {long:,} of"
                    " 20 s (rate x answer time; a run keeps as many as its answers' times need)"
                )
        else:
            out.append("  no per-minute limit known: the time depends on the server")
        if p.packed is None:
            out.append(
                "  by batch API (--mode batch): within 24 h (the completion window), most batches"
                " sooner, outside these limits"
            )
        out.append("  " + _cost(p))
    return out


def _cost(p: ModelPlan) -> str:
    online, batch = p.cost(), p.cost(batch=True)
    if online is None or batch is None:
        return "cost: no price known for this model (give one with --prices FILE)"
    (low, high), (blow, bhigh) = online, batch
    if high is None or bhigh is None:
        return (
            f"cost: {usd(low)} for the input, plus the answers (no max_tokens bounds them);"
            f" batch API {usd(blow)} plus answers"
        )
    return f"cost: {usd(low)} to {usd(high)} online; {usd(blow)} to {usd(bhigh)} by batch API"


def _minutes(m: float) -> str:
    if m < 1:
        return f"{m * 60:.0f} s"
    if m < 120:
        return f"{m:.1f} min"
    return f"{m / 60:.1f} h"


def plan_command(args: argparse.Namespace) -> int:
    """Check and read the job files, then print each model's plan under the limits given."""
    limits = group_from_args(LimitOptions, args).table()
    provider = args.provider or (limits.tier.provider if limits.tier else "openai")
    columns = group_from_args(ColumnOptions, args)
    embeds = args.api == "embeddings"
    source = JobSource(
        args.jobs,
        columns,
        provider=provider,
        default_model=args.model,
        endpoint=args.api,
        upload=args.api in ("chat", "responses"),  # as a run's default --upload auto does
    )
    schema = None
    if args.schema is not None:
        from .._config.schema import load_schema

        schema = load_schema(args.schema)
        schema.check_wire(provider)
    prices = group_from_args(CostOptions, args).prices()
    packs = None
    if embeds:
        wire = get_provider(provider, "embeddings")
        assert is_embedder(wire)
        packs = PackLimits(wire.max_inputs, wire.max_tokens)
    plans = make_plan(source, limits=limits, prices=prices, schema=schema, packs=packs)
    tier = f" under {args.tier} ({load_tiers()[0]})" if args.tier else ""
    print("\n".join(describe_plan(plans, tier)))
    if schema is not None:
        each = TokenEstimator().estimate(features(schema.text))
        print(f"\n(input tokens include the schema's, about {each:,} a request: it is billed)")
    return EXIT_OK
