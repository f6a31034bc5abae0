"""The mock's one request pipeline, from a plain request to a plain response.

Every wire format goes through the same steps: route, parse (the format's piece: key, body ->
call), faults (prompt markers, then seeded random ones), limits, latency, answer (the format's
piece again), count. Two admin routes read and reset the counters: ``GET /admin/stats``
(``?timeline=1`` adds per-second counts) and ``POST /admin/reset``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import anyio

from .._core.tokens import count_tokens
from ._batches import BatchService
from ._config import MockConfig
from ._faults import Fault, FaultDealer
from ._images import FILES, serve_file
from ._limits import Enforcer
from ._named_files import NAMED
from ._reply import reply_to
from ._routes import Routes
from ._state import MockState
from ._structured import StructuredAnswers
from ._wire import Refusal, Request, Response, WireFormat, json_response, text_response

__all__ = ["Pipeline"]

_DROPPED = Response(
    200,
    b'{"id": "cut',
    (("content-type", "application/json"), ("content-length", "4096")),
    drop=True,
)
"""The start of an answer that never finishes: the ``drop`` fault."""


class Pipeline:
    """The mock provider, independent of any HTTP server: ``await handle(request)``.

    ``clock`` is the wall clock its limits and counters go by (minutes, seconds, quota days).
    """

    def __init__(self, config: MockConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.state = MockState()
        self.routes = Routes(config)
        self.enforcer = Enforcer(
            config.limits.for_model,
            clock,
            quantized=config.openai_per_second,
            window=config.openai_window,
        )
        self._faults = FaultDealer(config.faults, config.seed + 1)
        self._latency = random.Random(config.seed)
        self._structured = StructuredAnswers()
        self._answered = 0  # numbers the answers' ids; /admin/reset does not restart it
        self.batches = BatchService(
            self.answer_line,
            clock,
            delay=config.batch_delay,
            omit_keys=config.batch_omit_keys,
            gradual=config.batch_gradual,
            creates=lambda tag: self.state.batch_creates.append(tag),
            file_ttl=config.file_ttl,
            file_processing=config.file_processing,
        )

    def _count(self, text: str) -> int:
        """The prompt tokens of ``text``: the mock's tokenizer, times ``token_scale``."""
        tokens = count_tokens(text)
        scale = self.config.token_scale
        return tokens if scale == 1.0 else math.ceil(tokens * scale)

    async def handle(self, request: Request) -> Response:
        """The answer to ``request``."""
        batch = await self.batches.handle(request)
        if batch is not None:
            return batch
        wire = self.routes.match(request.path)
        if wire is not None:
            if request.method != "POST":
                return _not_allowed("POST")
            return await self._call(wire, request)
        if request.path.startswith(FILES):
            if request.method != "GET":
                return _not_allowed("GET")
            return serve_file(self.routes.files, request.path) or text_response(404, "Not Found")
        if request.path == "/admin/stats":
            if request.method != "GET":
                return _not_allowed("GET")
            timeline = request.query.get("timeline") in ("1", "true")
            return json_response(200, self.state.snapshot(timeline))
        if request.path == "/admin/reset":
            if request.method != "POST":
                return _not_allowed("POST")
            self.state = MockState()
            return json_response(200, {"ok": True})
        return text_response(404, "Not Found")

    async def _call(self, wire: WireFormat, request: Request) -> Response:
        named = NAMED.set(self.batches.store.named)  # files this request may name by id
        try:
            response = await self._serve(wire, request)
        except Refusal as refusal:
            response = refusal.response
            self.state.record(0 if response.drop else response.status, self.clock())
        finally:
            NAMED.reset(named)
        return response

    async def answer_line(self, request: Request) -> Response:
        """A batch line's answer: the online route's, without its limits, latency or counters
        (a batch does not count against the online limits); a dropped answer is a 500."""
        wire = self.routes.match(request.path)
        if wire is None:
            return text_response(404, "Not Found")
        self.state.batch_lines += 1
        named = NAMED.set(self.batches.store.named)  # files a line may name by id
        try:
            response = await self._serve(wire, request, online=False)
        except Refusal as refusal:
            response = refusal.response
        finally:
            NAMED.reset(named)
        return wire.internal() if response.drop else response

    async def _serve(self, wire: WireFormat, request: Request, *, online: bool = True) -> Response:
        """Take one call through the steps; a refusal at any step is its answer."""
        call = wire.parse(request)
        fault = self._faults.deal(call.last_user)
        if fault is not None and (online or fault is not Fault.SLOW):
            await self._act_out(fault, wire)
        prompt_tokens = self._count(call.prompt) + call.media_tokens
        admitted = None
        if online:
            project = self.config.project_of(call.key)
            why = self.enforcer.check(
                wire.limit_style, call.model, prompt_tokens, call.max_tokens, project=project
            )
            if why is not None:
                headers = self.enforcer.headers(call.model, project) if wire.reports_limits else {}
                raise Refusal(wire.rate_limited(call, why, headers))
            admitted = self.clock()
            lo, hi = self.config.latency_ms
            if hi > 0:
                await anyio.sleep(self._latency.uniform(lo, hi) / 1000)
        structured = None
        if call.schema is not None:
            structured = self._structured.text(call.schema, call.model, call.last_user)
        reply = reply_to(call, prompt_tokens, structured)
        self.state.input_tokens += reply.input_tokens
        self.state.output_tokens += reply.output_tokens
        self._answered += 1
        if online:
            self.state.record(200, self.clock(), call.model, admitted=admitted)
        project = self.config.project_of(call.key)
        headers = self.enforcer.headers(call.model, project) if wire.reports_limits else {}
        response = wire.answer(call, reply, self._answered, headers)
        if fault is Fault.TRUNCATE:
            self.state.truncated += 1
            response = Response(200, response.body[: len(response.body) // 2], response.headers)
        return response

    async def _act_out(self, fault: Fault, wire: WireFormat) -> None:
        """Refuse as ``fault`` says, or wait for a slow one; a truncation happens at the end."""
        if fault is Fault.INVALID:
            message = "Invalid request: this prompt is marked to fail ([[fail:400]])."
            raise Refusal(wire.invalid(message))
        if fault is Fault.UNAVAILABLE:
            raise Refusal(wire.unavailable())
        if fault is Fault.INTERNAL:
            raise Refusal(wire.internal())
        if fault is Fault.DROP:
            self.state.dropped += 1
            raise Refusal(_DROPPED)
        if fault is Fault.SLOW:
            await anyio.sleep(self.config.faults.slow_ms / 1000)


def _not_allowed(allow: str) -> Response:
    return text_response(405, "Method Not Allowed", {"allow": allow})
