"""The run loop: check the inputs, skip what is done, send the rest, record every result once.

A ``Runner`` is an ``async with`` object: entering checks the inputs (nothing is sent if any is
bad), resolves the key and the endpoint, and opens the results store; ``run()`` sends; leaving
compacts the journal into Parquet. ``statistics()`` is a snapshot at any moment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

import anyio
import anyio.lowlevel
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock, SystemClock
from ._errors import (
    FatalProviderError,
    ProviderError,
    QuotaExhausted,
    RateLimitError,
    RetryableError,
    UsageError,
)
from ._estimate import features
from ._idset import IdSet, id_hash
from ._jobs import ColumnMapping, Job, JobSource, ProviderName
from ._lane import Lane
from ._ledger import DailyCount, Ledger
from ._limits import LimitTable
from ._providers import (
    Completion,
    Provider,
    RateHints,
    RequestSpec,
    get_provider,
    rate_hints,
)
from ._retry import RetryPolicy
from ._stats import RateMeter, RunSummary, Statistics
from ._store import Record, ResultStore, read_results

__all__ = ["JobsInput", "RunOptions", "Runner"]

log = logging.getLogger("batcher")

JobsInput = (
    str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[Job | Mapping[str, Any]]
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Everything a run can be told. The CLI's flags map one to one onto these."""

    provider: ProviderName = "openai"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    model: str | None = None
    max_concurrency: int = 16
    max_attempts: int = 5
    timeout: float = 120.0
    prompt_column: str | None = None
    prompt_template: str | None = None
    id_column: str | None = None
    mock: str | None = None
    """Run against the embedded mock provider with this preset (``"default"``), not the network."""
    tier: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    limits_file: str | None = None
    retry_errors: bool = False
    """Send jobs that ended in error again; their old rows are replaced."""
    redo_changed: bool = False
    """Send again finished jobs whose request changed since; otherwise their old results stay."""
    on_daily_limit: Literal["wait", "exit"] = "wait"
    """When a model's daily quota is spent: wait for the reset, or stop (exit 3)."""
    quota_day: Literal["pacific", "rolling"] = "pacific"
    """Count RPD per quota day ending at midnight America/Los_Angeles, or over a rolling 24 h."""
    grace: float = 5.0
    """Seconds in-flight requests get to finish after a stop (SIGINT / SIGTERM)."""

    def __post_init__(self) -> None:
        if self.provider not in ("openai", "gemini"):
            raise UsageError(f"unknown provider {self.provider!r}; choose openai or gemini")
        if self.max_concurrency < 1:
            raise UsageError("--max-concurrency must be at least 1")
        if self.max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1")
        if self.timeout <= 0:
            raise UsageError("the request timeout must be positive")
        if self.mock is not None and self.base_url is not None:
            raise UsageError("--mock and --base-url cannot be used together")
        if self.on_daily_limit not in ("wait", "exit"):
            raise UsageError("--on-daily-limit takes wait or exit")
        if self.quota_day not in ("pacific", "rolling"):
            raise UsageError("--quota-day takes pacific or rolling")


def resolve_key(options: RunOptions, provider: Provider) -> tuple[str, str]:
    """The API key and where it came from (for messages); the key itself is never logged or
    written anywhere."""
    if options.api_key:
        return options.api_key, "the api_key option"
    names = (options.api_key_env,) if options.api_key_env else provider.key_envs
    for name in names:
        if os.environ.get(name):
            return os.environ[name], f"${name}"
    if options.mock is not None:
        return "mock-key", "the mock's key"
    raise UsageError(
        f"no API key: set {' or '.join(names)} in the environment"
        + ("" if options.api_key_env else " (or name another variable with --api-key-env)")
    )


async def send(
    client: httpx.AsyncClient,
    provider: Provider,
    path: str,
    body: Any,
    observe: Callable[[RateHints], None] | None = None,
) -> Completion:
    """One HTTP attempt; httpx's exceptions are translated to ours here and only here.

    ``observe`` sees the rate-limit headers of every answer, errors included.
    """
    try:
        response = await client.post(path, json=body)
    except httpx.TimeoutException as e:
        raise RetryableError(f"request timed out ({type(e).__name__})") from None
    except httpx.TransportError as e:
        raise RetryableError(f"connection failed ({type(e).__name__}: {e})") from None
    if observe is not None:
        observe(rate_hints(response.headers))
    return provider.parse(response)


def fingerprint(provider: Provider, model: str, spec: RequestSpec) -> str:
    """A hash of what is sent for a job: provider, model, path and body (never the key)."""
    data = json.dumps(
        [provider.name, model, spec.path, spec.body],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(data.encode()).hexdigest()[:16]


class Runner:
    """One run of a set of jobs into an output directory."""

    def __init__(
        self,
        jobs: JobsInput,
        out: str | os.PathLike[str],
        options: RunOptions | None = None,
        *,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options or RunOptions()
        self.out = Path(out)
        self.clock: Clock = clock or SystemClock()
        self.provider = get_provider(self.options.provider)
        mapping = ColumnMapping(
            prompt_column=self.options.prompt_column,
            prompt_template=self.options.prompt_template,
            id_column=self.options.id_column,
        )
        self.source = JobSource(jobs, mapping)  # type: ignore[arg-type]
        self.store = ResultStore(self.out)
        self.policy = RetryPolicy(max_attempts=self.options.max_attempts)
        self.limits = LimitTable.build(
            tier=self.options.tier,
            rpm=self.options.rpm,
            tpm=self.options.tpm,
            rpd=self.options.rpd,
            limits_file=self.options.limits_file,
        )
        self.lanes: dict[str, Lane] = {}
        self.quota_stops: dict[str, QuotaExhausted] = {}
        self._deferred = 0
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._mock: Any = None
        self._tg: TaskGroup | None = None
        self._fatal: FatalProviderError | None = None
        self._done = IdSet()
        self.changed: list[str] = []
        self.ledger = Ledger(self.out)
        self._stopping: int | None = None
        self._halting = False
        self._producer_scope = anyio.CancelScope()
        self._active: dict[anyio.CancelScope, list[bool]] = {}
        self._outstanding = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._waiting_until: float | None = None
        self._key_source = ""
        self._key = ""
        self._base_url = ""
        self._meter = RateMeter()
        self._started = 0.0
        self._total = 0
        self._ok = self._errors = self._skipped = 0
        self._in_flight = self._requests = 0
        self._input_tokens = self._output_tokens = 0

    async def __aenter__(self) -> Runner:
        opts = self.options
        key, self._key_source = resolve_key(opts, self.provider)
        self._key = key
        self._check_manifest()
        await anyio.to_thread.run_sync(self._prepare)
        base_url = opts.base_url or self.provider.default_base_url
        if opts.mock is not None:
            from .mock import MockServer, preset

            self._mock = MockServer(preset(opts.mock)).start()
            base_url = self._mock.base_url(opts.provider)
        self._base_url = "the mock provider" if opts.mock is not None else base_url
        self._write_manifest(base_url)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=self.provider.auth_headers(key),
            timeout=httpx.Timeout(opts.timeout, connect=min(opts.timeout, 30.0)),
            limits=httpx.Limits(
                max_connections=opts.max_concurrency, max_keepalive_connections=opts.max_concurrency
            ),
            transport=self._transport,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._client is not None:
                await self._client.aclose()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.store.close)
                await anyio.to_thread.run_sync(self._save_ledger)
        finally:
            if self._mock is not None:
                self._mock.stop()

    def _prepare(self) -> None:
        """Check every job, recover the journal, and decide what is done and what to send again."""
        opts = self.options
        self.store.open()
        finished, errors = self.store.finished()
        changed: list[str] = []

        def compare(job: Job) -> None:
            old = finished.get(job.id)
            if old is None:
                return
            model = job.model or opts.model or ""
            if old != int(fingerprint(self.provider, model, self.provider.build(job, model)), 16):
                changed.append(job.id)

        scan = self.source.scan(
            provider=opts.provider, default_model=opts.model, visit=compare if finished else None
        )
        self._total = scan.total
        redo = set(changed) if opts.redo_changed else set()
        if opts.retry_errors:
            redo.update(errors)
        if redo:
            self.store.remove(redo)
            log.info("sending %d finished job(s) again (%s)", len(redo), _flags(opts))
        again = {id_hash(i) for i in redo}
        keys = finished.hashes()
        self._done = IdSet(keys if not again else (k for k in keys if k not in again))
        self.changed = [] if opts.redo_changed else changed
        if self.changed:
            sample = ", ".join(self.changed[:5]) + (", ..." if len(self.changed) > 5 else "")
            log.warning(
                "%d finished job(s) have a different request now (%s); their old results are "
                "kept: pass --redo-changed to send them again",
                len(self.changed),
                sample,
            )

    def _refresh_done(self) -> None:
        """Compact the journal and re-read what is done, before another pass over the inputs."""
        self.store.close()
        finished, _ = self.store.finished()
        self._done = IdSet(finished.hashes())

    def _check_manifest(self) -> None:
        """Refuse to mix results of another provider or default model into this directory."""
        path = self.out / "run.json"
        if not path.is_file():
            return
        old = json.loads(path.read_text())
        for key, flag in (("provider", "--provider"), ("model", "--model")):
            if old.get(key) != getattr(self.options, key):
                raise UsageError(
                    f"{self.out} holds a run with {flag} {old.get(key)}, and this one asks for "
                    f"{getattr(self.options, key)}; their results would mix. Use another --out, "
                    "or the same options."
                )

    def _write_manifest(self, base_url: str) -> None:
        opts = self.options
        manifest = {
            "provider": opts.provider,
            "model": opts.model,
            "base_url": "mock" if opts.mock is not None else base_url,
            "total": self._total,
            "inputs": [str(p) for p in self.source.paths],
            "tier": opts.tier,
            "rpm": opts.rpm,
            "tpm": opts.tpm,
            "rpd": opts.rpd,
            "limits_file": opts.limits_file,
            "quota_day": opts.quota_day,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "run.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.out / "run.json")

    def statistics(self) -> Statistics:
        now = self.clock.monotonic()
        rpm, tpm = self._meter.per_minute(now, self._started)
        return Statistics(
            total=self._total,
            done=self._ok + self._errors,
            ok=self._ok,
            errors=self._errors,
            skipped=self._skipped,
            in_flight=self._in_flight,
            requests=self._requests,
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            elapsed=now - self._started if self._started else 0.0,
            quota_wait=(
                max(0.0, self._waiting_until - self.clock.time())
                if self._waiting_until is not None
                else None
            ),
        )

    async def run(self) -> RunSummary:
        """Send every job not yet finished; raise ``FatalProviderError`` if the run cannot go on.

        Jobs of a model whose daily quota is spent are passed over; with ``on_daily_limit="wait"``
        the run sleeps until the earliest reset and reads the inputs again for them.
        """
        if self._client is None:
            raise RuntimeError("use 'async with Runner(...) as runner' before run()")
        self._started = self.clock.monotonic()
        send_jobs, receive_jobs = anyio.create_memory_object_stream[Job](
            self.options.max_concurrency
        )
        async with anyio.create_task_group() as keeper:
            keeper.start_soon(self._keep_ledger)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._produce, send_jobs)
                async with receive_jobs:
                    for _ in range(self.options.max_concurrency):
                        tg.start_soon(self._work, receive_jobs.clone())
            keeper.cancel_scope.cancel()
        if self._fatal is not None:
            raise self._fatal
        elapsed = self.clock.monotonic() - self._started
        return await anyio.to_thread.run_sync(self._summary, elapsed)

    def stop(self, signum: int = signal.SIGINT) -> None:
        """Stop admitting; requests in flight get ``grace`` seconds, then are abandoned.

        Jobs that finish are recorded as usual; the rest are left for a rerun.
        """
        if self._stopping is not None:
            return
        self._stopping = signum
        self._halt()

    def _halt(self) -> None:
        """Admit nothing more; what is in flight gets ``grace`` seconds to finish."""
        if self._halting or self._tg is None:
            return
        self._halting = True
        self._producer_scope.cancel()
        for scope, sending in list(self._active.items()):
            if not sending[0]:
                scope.cancel()
        self._tg.cancel_scope.deadline = anyio.current_time() + self.options.grace

    @property
    def stopping(self) -> int | None:
        """The signal the run is stopping for, if it is."""
        return self._stopping

    def stop_now(self) -> None:
        """Abandon the requests in flight too (a second SIGINT)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _summary(self, elapsed: float) -> RunSummary:
        self.store.close()
        self._save_ledger()
        counts = read_results(self.out)
        return RunSummary(
            out=str(self.out),
            total=self._total,
            ok=counts["ok"],
            errors=counts["error"],
            skipped=self._skipped,
            finished=self._ok + self._errors,
            requests=self._requests,
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            elapsed=elapsed,
            deferred=self._deferred if self._stopping is None else 0,
            quota_stops=tuple(str(e) for e in self.quota_stops.values()),
            interrupted=self._stopping,
        )

    async def _produce(self, stream: MemoryObjectSendStream[Job]) -> None:
        with self._producer_scope:
            async with stream:
                first = True
                while True:
                    self._deferred = 0
                    await self._one_pass(stream, count_skipped=first)
                    first = False
                    await self._idle.wait()  # every job of this pass finished or was deferred
                    if not self._deferred or self.options.on_daily_limit == "exit":
                        return
                    await self._wait_for_reset()
                    await anyio.to_thread.run_sync(self._refresh_done)

    async def _one_pass(self, stream: MemoryObjectSendStream[Job], *, count_skipped: bool) -> None:
        for n, job in enumerate(self.source):
            if n % 1024 == 0:
                # a long run of finished jobs must not starve the progress display or a SIGINT
                await anyio.lowlevel.checkpoint()
            if job.id in self._done:
                self._skipped += count_skipped
                continue
            lane = self.lane(job.model or self.options.model or "")
            stopped = lane.blocked()
            if stopped is not None:
                self.quota_stops.setdefault(lane.model, stopped)
                self._deferred += 1
                continue
            if self._outstanding == 0:
                self._idle = anyio.Event()  # set again when the last job of this pass is done
            self._outstanding += 1
            await stream.send(job)

    async def _wait_for_reset(self) -> None:
        """Sleep until the earliest quota reset among the lanes that wait for one."""
        resets = [e.resets_at for e in self.quota_stops.values()]
        self._waiting_until = min(resets) if resets else None
        for e in self.quota_stops.values():
            log.info("waiting for the daily quota: %s", e)
        if self._waiting_until is not None:
            await self.clock.sleep(max(0.0, self._waiting_until - self.clock.time()) + 1.0)
        self._waiting_until = None
        self.quota_stops.clear()

    async def _work(self, stream: MemoryObjectReceiveStream[Job]) -> None:
        async with stream:
            async for job in stream:
                if not self._halting:
                    record = await self._process(job)
                    if record is not None:
                        self._finish(record)
                self._outstanding -= 1
                if self._outstanding == 0:
                    self._idle.set()

    async def _keep_ledger(self) -> None:
        """Save the RPD ledger every couple of seconds while the run goes on."""
        while True:
            await anyio.sleep(2.0)
            await anyio.to_thread.run_sync(self._save_ledger)

    def _save_ledger(self) -> None:
        self.ledger.save({m: lane.daily for m, lane in self.lanes.items()})

    def lane(self, model: str) -> Lane:
        """The lane of ``model``, made on first use with its limits and today's spent quota."""
        lane = self.lanes.get(model)
        if lane is None:
            limits = self.limits.for_model(model)
            daily = DailyCount(
                rolling=self.options.quota_day == "rolling", keep_times=limits.rpd is not None
            )
            self.ledger.restore(model, daily)
            lane = Lane(
                model, limits, self.clock, per_second=self.provider.per_second_limits, daily=daily
            )
            self.lanes[model] = lane
        return lane

    async def _process(self, job: Job) -> Record | None:
        assert self._client is not None
        client, provider = self._client, self.provider
        model = job.model or self.options.model
        assert model is not None  # the scan refused jobs without one
        spec = provider.build(job, model)
        lane = self.lane(model)
        x = features(job.text)
        output_charge = (job.max_tokens or 0) if provider.charges_output else 0
        attempts = 0
        start = self.clock.monotonic()

        sending = [False]

        async def attempt() -> Completion:
            nonlocal attempts
            if self._halting:
                raise _Stopped
            cost = lane.estimator.estimate(x) + output_charge
            lane.check_size(cost)
            ticket = await lane.admit(cost)
            attempts += 1
            self._requests += 1
            sending[0] = True
            try:
                answer = await send(client, provider, spec.path, spec.body, lane.observe)
            except RateLimitError as e:
                lane.on_rate_limited(e)
                raise
            finally:
                sending[0] = False
                lane.answered()
            lane.succeeded += 1
            if answer.input_tokens is not None:
                lane.estimator.learn(x, answer.input_tokens)
                lane.settle(ticket, answer.input_tokens + output_charge)
            return answer

        self._in_flight += 1
        scope = anyio.CancelScope()
        self._active[scope] = sending
        try:
            with scope:
                done = await self.policy.call(attempt, clock=self.clock)
            if scope.cancelled_caught:
                return None  # stopped before it was sent: left for a rerun
        except _Stopped:
            return None
        except FatalProviderError as e:
            self._fatal_stop(e, model)
            return None
        except QuotaExhausted as e:
            self.quota_stops.setdefault(model, e)
            self._deferred += 1
            return None
        except ProviderError as e:
            return self._record(job, model, spec, attempts, start, error=e)
        finally:
            self._in_flight -= 1
            del self._active[scope]
        return self._record(job, model, spec, attempts, start, completion=done)

    def _record(
        self,
        job: Job,
        model: str,
        spec: RequestSpec,
        attempts: int,
        start: float,
        *,
        completion: Completion | None = None,
        error: ProviderError | None = None,
    ) -> Record:
        latency = (self.clock.monotonic() - start) * 1000
        fp = fingerprint(self.provider, model, spec)
        finished_at = self.clock.time()
        if completion is not None:
            return Record(
                id=job.id,
                status="ok",
                text=completion.text,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                attempts=attempts,
                error=None,
                error_kind=None,
                model=completion.model or model,
                finish_reason=completion.finish_reason,
                latency_ms=latency,
                response=self._redact(completion.raw),
                source=job.source,
                fingerprint=fp,
                finished_at=finished_at,
            )
        assert error is not None
        status = f"HTTP {error.status}: " if error.status and error.status != 200 else ""
        return Record(
            id=job.id,
            status="error",
            text=None,
            input_tokens=None,
            output_tokens=None,
            attempts=attempts,
            error=self._redact(f"{status}{error.message}"),
            error_kind=error.kind,
            model=model,
            finish_reason=None,
            latency_ms=latency,
            response=self._redact(error.body),
            source=job.source,
            fingerprint=fp,
            finished_at=finished_at,
        )

    def _finish(self, record: Record) -> None:
        if record.status == "ok":
            self._ok += 1
        else:
            self._errors += 1
        tokens = (record.input_tokens or 0) + (record.output_tokens or 0)
        self._input_tokens += record.input_tokens or 0
        self._output_tokens += record.output_tokens or 0
        self._meter.add(self.clock.monotonic(), tokens)
        seq = self.store.append(record)
        if seq is not None and self._tg is not None:
            self._tg.start_soon(anyio.to_thread.run_sync, self.store.compact, seq)

    def _fatal_stop(self, error: FatalProviderError, model: str) -> None:
        """A fatal answer: stop admitting, let what is in flight finish (within ``grace``); what
        finished is kept, the rest is left for a rerun."""
        if self._fatal is None:
            self._fatal = FatalProviderError(
                self._explain(error, model), status=error.status, body=error.body
            )
        self._halt()

    def _explain(self, error: FatalProviderError, model: str) -> str:
        """Say what is wrong in words a user can act on: which key, which model, what worked."""
        where = self._base_url
        if error.status in (401, 403) or "API_KEY_INVALID" in (error.body or ""):
            what = f"the API key from {self._key_source} was refused by {where}"
        elif error.status == 404:
            what = f"model {model!r} is not available at {where} (check --model or the job's model)"
        elif "insufficient_quota" in error.message:
            what = "the account has no quota left (insufficient_quota): add credit or change key"
        else:
            what = f"{model} cannot be used at {where}"
        worked = sorted(m for m, lane in self.lanes.items() if lane.succeeded and m != model)
        also = f"; models that worked: {', '.join(worked)}" if worked else ""
        return self._redact(f"{what}: {error.message}{also}")

    @overload
    def _redact(self, text: str) -> str: ...
    @overload
    def _redact(self, text: None) -> None: ...
    def _redact(self, text: str | None) -> str | None:
        """The key, should a server echo it back, never reaches results, logs or errors."""
        if text is None or not self._key:
            return text
        return text.replace(self._key, "[API key]")


class _Stopped(Exception):
    """The run is stopping: this job is not sent (again)."""


def _flags(options: RunOptions) -> str:
    return " and ".join(
        f
        for f, on in (
            ("--retry-errors", options.retry_errors),
            ("--redo-changed", options.redo_changed),
        )
        if on
    )
