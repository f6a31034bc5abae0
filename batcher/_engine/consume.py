"""The one consumer of outcomes, and the one sink every result and attempt is written through.

Whichever way a job went (an online request, a line of a provider batch, an endpoint of a pool),
its executor hands the ``Outcome`` here: a finished job is journaled (it counts only once it is
written), a deferred one is counted for the quota wait, a fatal answer, an outage or a failed write
stops the run. What stops the run is kept as the first reason (``raise_stop`` raises it at the
end), and every part that sends (the scheduler, the batch executor) is told at once, through the
callbacks given to ``on_stop``. ``--budget`` is kept here too: a job or a batch reserves its worst
case before it is sent, and its outcome settles it.

Journal segments are compacted into Parquet parts on worker threads while the run goes on, inside
``running()``; a write that fails there stops the run like one that fails on the loop.

Results go to a ``Sink``: a run's ``ResultStore``, or, on a cluster's worker, the journal of the
block it sends (``ray.blocks.BlockJournal``), whose outcomes are handled here all the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Generic, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.abc import TaskGroup

from .._core.errors import Outage, QuotaExhausted, WriteFailed
from .._core.heap import quiet_heap, release_heap
from .._rundir.attempts import Attempt, AttemptLog
from .._rundir.rows import Record
from .budget import Budget, Reservation, unpriced
from .outcome import Deferred, Done, Fatal, Halted, Outcome
from .tally import Tally

__all__ = ["Consumer", "Holds", "Sink"]


class Sink(Protocol):
    """Where finished jobs are journaled, one at a time, each durable once ``append`` returns."""

    def append(self, record: Record) -> int | None:
        """Journal one result; the number of a journal segment now full (to ``compact``), if
        one is."""
        ...

    def compact(self, seq: int) -> None:
        """Write segment ``seq`` as a part of the results."""
        ...

    def fit(self, record: Record) -> Record:
        """``record`` as it can be written (an embedding of another length than the column's
        becomes an error row)."""
        ...


@runtime_checkable
class Holds(Protocol):
    """A sink that can journal a group of results in one write (``JournalStore``)."""

    def hold(self) -> None: ...

    def flush(self) -> int | None: ...


SinkT = TypeVar("SinkT", bound=Sink)


class Consumer(Generic[SinkT]):
    """Acts on every outcome of a run and writes its results and attempts."""

    def __init__(
        self,
        store: SinkT,
        tally: Tally,
        *,
        attempts: AttemptLog | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.store = store
        self.tally = tally
        self.attempts = attempts
        self.budget = budget
        self.budget_stop: str | None = None
        """Why admission stopped at the budget, if it did."""
        self.unpriced: str | None = None
        """A model without a known price met under a budget: nothing bounds its cost."""
        self.quota_stops: dict[str, QuotaExhausted] = {}
        """Models whose daily quota is spent, each with when it resets."""
        self.deferred = 0
        """Jobs of this pass left for a quota reset."""
        self.fatal: Fatal | None = None
        """The first fatal answer."""
        self.outage: Outage | None = None
        """The outage that stopped the run, if one did."""
        self.write_failed: WriteFailed | None = None
        """The failed write (a full disk...) that stopped the run, if one did."""
        self._stops: list[Callable[[], None]] = []
        self._budget_stops: list[Callable[[], None]] = []
        self._tg: TaskGroup | None = None
        self._compactions = 0  # started on worker threads and not ended
        self._compaction_ended: anyio.Event | None = None  # set as one ends; made by who waits
        self._one_thread = anyio.CapacityLimiter(1)
        """Compactions (results' and attempts' segments fill together) run one at a time: two
        at once hold the interpreter's lock twice as long beside the event loop."""

    def on_stop(
        self, halt: Callable[[], None], *, budget: Callable[[], None] | None = None
    ) -> None:
        """Call ``halt`` when the run must stop (fatal, outage, failed write), and ``budget``
        when admission must end at the budget (what is in flight still finishes)."""
        self._stops.append(halt)
        if budget is not None:
            self._budget_stops.append(budget)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Compact journal segments on worker threads while inside; wait for them on leaving.
        The heap is kept quiet meanwhile (``quiet_heap``)."""
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(quiet_heap)  # what would stall the loop mid-run, done first
                try:
                    yield
                except Exception as e:  # raised as it is, not in a group, once compactions end
                    error = e
                finally:
                    self._tg = None
        finally:
            release_heap()
        if error is not None:
            raise error

    @property
    def stopped(self) -> bool:
        """Whether the run must stop (not for the budget, which only ends admission)."""
        return any((self.fatal, self.outage, self.write_failed))

    def take(self, outcome: Outcome | None, reservation: Reservation | None = None) -> None:
        """Act on one outcome (None: nothing came back, the job is left for a rerun), settling
        the job's reservation under ``--budget``."""
        if reservation is not None:
            self.settle(reservation, outcome)
        if isinstance(outcome, Done):
            self.record(outcome.record)
        elif isinstance(outcome, Deferred):
            self.quota_stops.setdefault(outcome.stop.model, outcome.stop)
            self.deferred += 1
        elif isinstance(outcome, Fatal):
            self.fatal = self.fatal or outcome
            self._stop()
        elif isinstance(outcome, Halted):
            self.outage = self.outage or outcome.error
            self._stop()

    def record(self, record: Record) -> bool:
        """Journal a finished job; it counts only once it is written. After a failed write
        nothing more is written: the job is left for a rerun, and the run stops."""
        if self.write_failed is not None:
            return False
        record = self.store.fit(record)  # a vector of another length than the column's: an error
        try:
            seq = self.store.append(record)
        except WriteFailed as e:
            self.failed(e)
            return False
        self.tally.finished(record)
        if seq is not None:
            self._compact(self.store.compact, seq)
        return True

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """The results recorded inside reach the journal in one write as it ends (a sink that
        cannot hold them writes each as it comes). Counted as they are recorded, they are
        durable only after: a caller marks nothing done on them (a batch's chunk collected)
        until this has ended and ``write_failed`` is still None."""
        store = self.store
        if not isinstance(store, Holds) or self.write_failed is not None:
            yield
            return
        store.hold()
        try:
            yield
        finally:
            try:
                seq = store.flush()
            except WriteFailed as e:
                self.failed(e)
            else:
                if seq is not None:
                    self._compact(self.store.compact, seq)

    def attempt(self, attempt: Attempt) -> None:
        """Journal one request in the attempt log; a failed write stops the run as a result's
        does (the disk that refused it will refuse results next)."""
        if self.attempts is None or self.write_failed is not None:
            return
        try:
            seq = self.attempts.append(attempt)
        except WriteFailed as e:
            self.failed(e)
            return
        if seq is not None:
            self._compact(self.attempts.compact, seq)

    def failed(self, error: WriteFailed) -> None:
        """A write failed: the run stops."""
        self.write_failed = self.write_failed or error
        self._stop()

    def reserve(
        self,
        model: str,
        tokens: int,
        max_tokens: int | Sequence[int | None] | None,
        what: str,
        *,
        batch: bool = False,
    ) -> Reservation | None:
        """Set aside the worst-case cost of ``what`` (a job, a batch) before it is sent; on the
        first that does not fit (or whose model has no price), end admission: what is in flight
        finishes, the rest is left for a rerun with a larger budget."""
        assert self.budget is not None
        if self.budget_stop is not None or self.unpriced is not None:
            return None
        try:
            reservation = self.budget.reserve(model, tokens, max_tokens, batch=batch)
        except KeyError:
            self.unpriced = model
            self._end_admission()
            return None
        if reservation is None:
            self.budget_stop = f"the next {what} could take the spend over the budget"
            self._end_admission()
        return reservation

    def settle(self, reservation: Reservation, outcome: Outcome | None) -> None:
        """Replace a reservation by what its outcome cost (nothing, if it was not answered)."""
        assert self.budget is not None
        if isinstance(outcome, Done):
            record = outcome.record
            self.budget.settle(reservation, record.cost_usd, record.output_tokens)
        else:
            self.budget.settle(reservation, None)

    def raise_stop(self) -> None:
        """Raise what stopped the run, first things first, if anything did."""
        if self.write_failed is not None:
            raise self.write_failed
        if self.outage is not None:
            raise self.outage
        if self.unpriced is not None:
            raise unpriced(self.unpriced)
        if self.fatal is not None:
            raise self.fatal.error  # its message says what to fix (ProxyRefused: the proxy)

    def _stop(self) -> None:
        for halt in self._stops:
            halt()

    def _end_admission(self) -> None:
        for end in self._budget_stops:
            end()

    async def caught_up(self) -> None:
        """Wait until no journal segment is being compacted. A caller that journals much
        faster than a worker thread compacts (a batch's answers, a stretch at a time) calls this
        between stretches, so that a segment's rows (about 10 MB in memory at 5,000 answers of
        1 KB) are not kept twice or more: one compacting while the next fills, and so on."""
        while self._compactions:
            self._compaction_ended = anyio.Event()
            await self._compaction_ended.wait()

    def _compact(self, compact: Callable[[int], None], seq: int) -> None:
        """Compact segment ``seq`` on a worker thread, or here if no run is going on."""
        if self._tg is not None:
            self._compactions += 1
            self._tg.start_soon(self._in_thread, compact, seq)
        else:
            try:
                compact(seq)
            except WriteFailed as e:
                self.failed(e)

    async def _in_thread(self, compact: Callable[[int], None], seq: int) -> None:
        try:
            await anyio.to_thread.run_sync(compact, seq, limiter=self._one_thread)
        except WriteFailed as e:
            self.failed(e)
        finally:
            self._compactions -= 1
            if self._compaction_ended is not None:
                self._compaction_ended.set()
