"""The online executor: send one job through its lane, with retries, and say how it ended.

``execute`` returns an outcome value, ``Done(record) | Deferred(stop) | Fatal(error) |
Halted(outage) | Abandoned``, and writes nothing back into the run's state: the scheduler decides
what an outcome means (record it, wait for the reset, stop the run, leave it for a rerun). The
batch-API executor plugs in beside this one with the same outcomes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from .._admission.estimate import features
from .._admission.ipm import ImageAdmission, ImageGate
from .._admission.lane import Lane
from .._admission.retry import RetryPolicy
from .._config.prices import Prices, load_prices
from .._config.schema import OutputSchema
from .._core.clock import Clock
from .._core.errors import (
    FatalProviderError,
    NetworkRefused,
    Outage,
    PermanentJobError,
    ProviderError,
    ProxyRefused,
    QuotaExhausted,
    RetryableError,
    TimedOut,
)
from .._core.media import inline_now, job_media_tokens
from .._jobs import Job
from .._rundir.attempts import Attempt
from .._rundir.image_files import download, save_images
from .._rundir.rows import Record
from .._wire.endpoint import Target
from .._wire.providers import Completion, Provider, RequestSpec, fingerprint, job_fingerprint, send
from .._wire.proxy import proxy_refused
from .._wire.transport import Transport
from .outcome import ABANDONED, Deferred, Done, Fatal, Halted, Outcome
from .record import Answered, record_of
from .tally import Tally
from .uploads import Uploads, file_unknown

if TYPE_CHECKING:
    import urllib.request

__all__ = ["Executor", "Stopped", "explain"]


class Stopped(Exception):
    """The run is stopping: this job is not sent (again)."""


class Executor:
    """Sends jobs online over one transport; ``halt`` stops it sending more."""

    def __init__(
        self,
        transport: Transport,
        target: Target,
        policy: RetryPolicy,
        clock: Clock,
        tally: Tally,
        *,
        prices: Prices | None = None,
        out: Path | None = None,
        schema: OutputSchema | None = None,
        endpoint: str = "default",
        ipm: int | None = None,
        image_gate: Callable[[str], ImageAdmission] | None = None,
        uploads: Uploads | None = None,
    ) -> None:
        self.uploads = uploads
        """Sends files through the provider's Files API (``--upload``); None: all inline."""
        self.endpoint = endpoint
        """The endpoint's name, in each result's ``endpoint`` column."""
        self.out = out
        """The output directory, where images answered are saved (under ``images/``)."""
        self.schema = schema
        """The run's output schema (the provider asks for it and checks answers): its tokens
        are billed as input, so they count in each job's estimate."""
        self.ipm = ipm
        """Images per minute each model may be asked for (``--ipm``); None: no such limit."""
        self.image_gate = image_gate
        """Makes a model's gate for ``ipm`` (a cluster's shared one); None: an ``ImageGate``
        of this process."""
        self._gates: dict[str, ImageAdmission] = {}
        self.transport = transport
        self.prices = prices or load_prices()
        self.on_attempt: Callable[[Attempt], None] | None = None
        """Told of every request sent, as it ends (the attempt log)."""
        self.target = target
        self._host = urlsplit(target.base_url).netloc.rpartition("@")[2]
        """The endpoint's host and port for the attempt log, never a key."""
        self.provider = target.provider
        self.policy = policy
        self.clock = clock
        self.tally = tally
        self._halting = False
        self._waiting: dict[anyio.CancelScope, list[bool]] = {}  # scope -> [sending now]

    def halt(self) -> None:
        """Send nothing more: jobs waiting for admission or a retry are abandoned at once, those
        whose request is out are left to finish (the scheduler bounds that by its grace)."""
        self._halting = True
        for scope, sending in list(self._waiting.items()):
            if not sending[0]:
                scope.cancel()

    async def execute(self, job: Job, lane: Lane) -> Outcome:
        """Send ``job`` (whose model is resolved) through ``lane`` until it finishes or stops."""
        if self._halting:
            return ABANDONED
        model = job.model
        assert model is not None  # the source resolves every job's model
        start = self.clock.monotonic()
        if job.media:
            # files are read (and URLs fetched for Gemini) off the event loop, when sent
            try:
                outgoing = job
                if self.uploads is not None:  # a wait (retries, a file PROCESSING) halt ends
                    with self.stoppable([False]) as scope, scope:
                        outgoing = await self.uploads.prepare(job)
                    if scope.cancelled_caught:
                        return ABANDONED
                spec, fp, media_tokens = await anyio.to_thread.run_sync(
                    _build_with_media, self.provider, job, outgoing, model, self.target.opener
                )
            except (OSError, ValueError) as e:
                error = PermanentJobError(f"cannot send its images or files: {e}")
                return Done(self._record(job, model, None, 0, start, error=error))
            except ProviderError as e:
                error = PermanentJobError(f"cannot upload its files: {e}")
                return Done(self._record(job, model, None, 0, start, error=error))
            except Outage as e:  # the Files API stayed down for --max-outage
                return Halted(e)
        else:
            spec = self.provider.build(job, model)
            fp, media_tokens, outgoing = None, 0, job
        text = job.text if self.schema is None else f"{job.text}\n{self.schema.text}"
        x = features(text, media_tokens)
        output = (job.max_tokens or 0) if self.provider.charges_output else 0
        attempts = 0
        sending = [False]

        stale = [False]  # the provider said a file the request names is unknown

        async def attempt() -> Completion:
            nonlocal attempts, spec, outgoing
            if self._halting:
                raise Stopped
            if stale[0] and self.uploads is not None:  # upload it again, then send again
                stale[0] = False
                self.uploads.forget(outgoing)
                outgoing = await self.uploads.prepare(job)
                spec, _, _ = await anyio.to_thread.run_sync(
                    _build_with_media, self.provider, job, outgoing, model, self.target.opener
                )
            asked = self.clock.monotonic()
            if self.ipm is not None:
                await self._gate(model).admit(job.n or 1)
            async with lane.request(x, output=output) as slot:
                attempts += 1
                self.tally.requests += 1
                sending[0] = True
                sent = self.clock.monotonic()
                try:
                    answer = await send(
                        self.transport,
                        self.provider,
                        spec,
                        slot.observe,
                        lambda: self.count_resent(job.id, attempts, model, lane, sent),
                    )
                    if any(i.data is None for i in answer.images):
                        answer = replace(answer, images=await _download(answer, self.target.opener))
                except ProviderError as e:
                    if isinstance(e, TimedOut):
                        self.tally.timeouts += 1
                    self.log_attempt(job.id, attempts, model, asked, sent, error=e)
                    if file_unknown(e, outgoing) and attempts == 1:
                        stale[0] = True
                        raise RetryableError(f"a file it names is gone: {e.message}") from e
                    raise
                finally:
                    sending[0] = False
                self.log_attempt(job.id, attempts, model, asked, sent, answer=answer)
                slot.done(answer.input_tokens)
            return answer

        completion = await self.attempts(attempt, sending, model)
        if isinstance(completion, ProviderError):
            return Done(self._record(job, model, fp or spec, attempts, start, error=completion))
        if not isinstance(completion, Completion):
            return completion
        images: list[dict[str, Any]] = []
        if completion.images:
            if self.out is None:
                raise RuntimeError("an answer with images needs the executor's output directory")
            # durable on disk before the job's journal line (see _image_files)
            images = await anyio.to_thread.run_sync(
                save_images, self.out, job.id, completion.images
            )
        record = self._record(job, model, fp or spec, attempts, start, completion=completion)
        return Done(replace(record, images=tuple(images)) if images else record)

    @property
    def halting(self) -> bool:
        """Whether the run is stopping (``halt``): nothing more is sent."""
        return self._halting

    async def attempts(
        self, attempt: Callable[[], Awaitable[Completion]], sending: list[bool], model: str
    ) -> Completion | ProviderError | Outcome:
        """``attempt`` (one request of a job or pack, logged) under the retry policy: its answer,
        the error it ended on (the job's row), or how it stopped: abandoned (a halt), fatal,
        deferred to the daily reset, halted by an outage. Shared by a job and a pack (``embed``),
        whose attempts differ before and after the request but end the same ways."""
        with self.stoppable(sending) as scope:
            try:
                with scope:
                    completion = await self.policy.call(attempt, clock=self.clock)
                if scope.cancelled_caught:
                    return ABANDONED
            except Stopped:
                return ABANDONED
            except FatalProviderError as e:
                return Fatal(e, model)
            except QuotaExhausted as e:
                return Deferred(e)
            except Outage as e:
                return Halted(e)
            except ProviderError as e:
                return e
        return completion

    @contextmanager
    def stoppable(self, sending: list[bool]) -> Iterator[anyio.CancelScope]:
        """A cancel scope for one job's (or pack's) attempts, counted in flight while inside:
        ``halt`` cancels it unless ``sending[0]`` says its request is out."""
        scope = anyio.CancelScope()
        self.tally.in_flight += 1
        self._waiting[scope] = sending
        try:
            yield scope
        finally:
            self.tally.in_flight -= 1
            del self._waiting[scope]

    def count_resent(
        self,
        job_id: str,
        n: int,
        model: str,
        lane: Lane,
        sent: float,
        packed: Sequence[str] | None = None,
    ) -> None:
        """Count a request the transport sent twice (the server closed the kept-alive connection
        as it left): the first may have reached the server, so it counts as a request, in the
        day's count (RPD) and in the attempt log, where a row says so."""
        self.tally.requests += 1
        lane.count_resend()
        why = "the server closed the kept-alive connection as the request left: sent again"
        self.log_attempt(job_id, n, model, sent, sent, error=RetryableError(why), packed=packed)

    def log_attempt(
        self,
        job_id: str,
        n: int,
        model: str,
        asked: float,
        sent: float,
        *,
        answer: Completion | None = None,
        error: ProviderError | None = None,
        packed: Sequence[str] | None = None,
    ) -> None:
        """Tell ``on_attempt`` how one request went (``packed``: the ids of a packed request's
        jobs, ``job_id`` the first)."""
        if self.on_attempt is None:
            return
        now = self.clock.monotonic()
        self.on_attempt(
            Attempt(
                job_id=job_id,
                attempt=n,
                model=model,
                endpoint=self.endpoint,
                sent_at=self.clock.time() - (now - sent),
                waited_ms=(sent - asked) * 1000,
                latency_ms=(now - sent) * 1000,
                outcome="ok" if error is None else error.kind,
                http_status=200 if error is None else (error.status or None),
                input_tokens=answer.input_tokens if answer is not None else None,
                output_tokens=answer.output_tokens if answer is not None else None,
                retry_after=getattr(error, "retry_after", None),
                error=self.target.redact(error.message)[:500] if error is not None else None,
                host=self._host,
                packed=list(packed) if packed else None,
            )
        )

    def _gate(self, model: str) -> ImageAdmission:
        gate = self._gates.get(model)
        if gate is None:
            assert self.ipm is not None
            gate = self._gates[model] = (
                self.image_gate(model)
                if self.image_gate is not None
                else ImageGate(self.ipm, self.clock)
            )
        return gate

    def _record(
        self,
        job: Job,
        model: str,
        sent: RequestSpec | str | None,
        attempts: int,
        start: float,
        *,
        completion: Completion | None = None,
        error: ProviderError | None = None,
    ) -> Record:
        """The job's result; ``sent`` is its request, or that request's fingerprint already."""
        fp = fingerprint(self.provider, model, sent) if isinstance(sent, RequestSpec) else sent
        how = Answered(
            attempts=attempts,
            latency_ms=(self.clock.monotonic() - start) * 1000,
            fingerprint=fp,
            finished_at=self.clock.time(),
            endpoint=self.endpoint,
        )
        return record_of(
            job, model, how, self.prices, self.target.redact, completion=completion, error=error
        )


async def _download(
    answer: Completion, opener: urllib.request.OpenerDirector | None
) -> tuple[Any, ...]:
    """The answer's image URLs downloaded through ``opener`` (the run's proxy and CAs); a failure
    is retried as any failed request is, but says nothing of the endpoint, which answered."""
    try:
        return await anyio.to_thread.run_sync(download, answer.images, opener)
    except OSError as e:
        raise RetryableError(f"cannot download an image answered: {e}", unanswered=False) from None


def _build_with_media(
    provider: Provider,
    job: Job,
    sent: Job,
    model: str,
    opener: urllib.request.OpenerDirector | None,
) -> tuple[RequestSpec, str, int]:
    """The request of ``sent`` (``job`` with some files marked uploaded), its other images and
    files read now (URLs fetched through ``opener`` for a wire that takes inline data only),
    ``job``'s fingerprint (over their hashes, as the resume check computes it) and their tokens
    by the provider's rule."""
    spec = provider.build(sent, model, partial(inline_now, opener=opener))
    return spec, job_fingerprint(provider, job, model), job_media_tokens(job.media, provider.name)


def explain(error: FatalProviderError, model: str, target: Target, worked: list[str]) -> str:
    """Say what is wrong in words a user can act on: which key, which model, what worked; or
    which proxy, or certificate, when the network in between refused (the key never reached
    the endpoint)."""
    if isinstance(error, NetworkRefused):
        # a 407 to a POST: name the proxy
        if isinstance(error, ProxyRefused) and error.proxy is None and target.proxy is not None:
            error = proxy_refused(target.proxy, error.status or 407)
        return target.redact(error.message)
    where = target.where
    if error.status in (401, 403) or "API_KEY_INVALID" in (error.body or ""):
        what = f"the API key from {target.key_source} was refused by {where}"
    elif error.status == 404:
        what = f"model {model!r} is not available at {where} (check --model or the job's model)"
    elif "insufficient_quota" in error.message:
        what = "the account has no quota left (insufficient_quota): add credit or change key"
    else:
        what = f"{model} cannot be used at {where}"
    also = f"; models that worked: {', '.join(worked)}" if worked else ""
    return target.redact(f"{what}: {error.message}{also}")
