"""The quota stores: day counts never past the limit, leases that lapse, and lanes that share a
budget through a store so that together they stay under its limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batcher import QuotaExhausted
from batcher._admission.lane import Lane
from batcher._admission.quota import (
    LEASE_TTL,
    Account,
    MemoryStore,
    QuotaStore,
    SharedQuota,
    SqliteStore,
)
from batcher._config.limits import Limits
from tests.virtual import EPOCH, VirtualClock, run_virtual

ACCOUNT = Account.of_key("https://api.example/v1", "sk-secret-key", "$KEY")
DAY = "2027-01-15"


def _opener(kind: str, tmp_path: Path, redis_url: str | None) -> Callable[[], QuotaStore]:
    """A way to open one store twice, as two processes would."""
    if kind == "memory":
        store = MemoryStore()
        return lambda: store
    if kind == "sqlite":
        return lambda: SqliteStore(tmp_path / "state" / "quota.sqlite3")
    from batcher._admission.quota._redis import RedisStore

    assert redis_url is not None
    return lambda: RedisStore(redis_url)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], QuotaStore]:
    url = request.getfixturevalue("redis_url") if kind == "redis" else None
    return _opener(kind, tmp_path, url)


@asynccontextmanager
async def two(opener: Callable[[], QuotaStore]) -> AsyncIterator[tuple[QuotaStore, QuotaStore]]:
    a, b = opener(), opener()
    try:
        yield a, b
    finally:
        await a.aclose()
        if b is not a:
            await b.aclose()


@pytest.mark.anyio
async def test_two_openers_of_one_store_never_grant_past_the_daily_limit(
    opener: Callable[[], QuotaStore],
) -> None:
    async with two(opener) as (a, b):
        granted = []
        for i in range(12):
            store = (a, b)[i % 2]
            granted.append(await store.reserve(ACCOUNT, "m", DAY, 3, 20))
        assert sum(granted) == 20
        assert granted[:6] == [3] * 6 and granted[6] == 2 and granted[7:] == [0] * 5
        await a.give_back(ACCOUNT, "m", DAY, 5)  # a block not spent
        assert await b.reserve(ACCOUNT, "m", DAY, 10, 20) == 5
        assert await b.reserve(ACCOUNT, "other-model", DAY, 10, 20) == 10  # its own budget
        assert await b.reserve(ACCOUNT, "m", "2027-01-16", 4, 20) == 4  # a new day
        assert await a.reserve(ACCOUNT, "m", DAY, 7, None) == 7  # no limit: only counted
        spent = {(s.model, s.count) for s in await a.spent(DAY)}
        assert spent == {("m", 27), ("other-model", 10)}


@pytest.mark.anyio
async def test_leases_count_holders_and_lapse_unless_renewed(
    opener: Callable[[], QuotaStore],
) -> None:
    async with two(opener) as (a, b):
        t = EPOCH
        assert await a.join(ACCOUNT, "m", "A", active=True, ttl=LEASE_TTL, now=t) == 1
        assert await b.join(ACCOUNT, "m", "B", active=True, ttl=LEASE_TTL, now=t + 1) == 2
        assert await b.join(ACCOUNT, "m2", "B", active=True, ttl=LEASE_TTL, now=t + 1) == 1
        # A dies without a word: B keeps renewing, and A's lease lapses after its ttl
        assert await b.join(ACCOUNT, "m", "B", active=True, ttl=LEASE_TTL, now=t + 4) == 2
        assert await b.join(ACCOUNT, "m", "B", active=True, ttl=LEASE_TTL, now=t + 6) == 1
        # an idle holder drops its lease; one that leaves drops all of them
        assert await a.join(ACCOUNT, "m", "A", active=True, ttl=LEASE_TTL, now=t + 7) == 2
        assert await a.join(ACCOUNT, "m", "A", active=False, ttl=LEASE_TTL, now=t + 7) == 1
        await b.leave("B")
        assert await a.join(ACCOUNT, "m2", "A", active=False, ttl=LEASE_TTL, now=t + 7) == 0


def test_the_store_knows_an_account_by_a_hash_and_a_label_never_by_its_key(
    tmp_path: Path,
) -> None:
    async def write() -> None:
        store = SqliteStore(tmp_path / "q.sqlite3")
        await store.reserve(ACCOUNT, "m", DAY, 1, None)
        await store.aclose()

    anyio.run(write)
    raw = (tmp_path / "q.sqlite3").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("q.sqlite3-*")
    )
    assert b"sk-secret-key" not in raw
    assert ACCOUNT.id.encode() in raw and b"$KEY" in raw
    assert Account.of_key("https://other/v1", "sk-secret-key", "$KEY").id != ACCOUNT.id
    assert Account.of_project("gemini", "p").id == Account.of_project("gemini", "p").id


def test_two_keys_read_from_one_variable_get_two_labels_naming_a_fingerprint_and_the_host() -> None:
    a = Account.of_key("https://user:pw@api.example:8443/v1", "sk-first-key", "$OPENAI_API_KEY")
    b = Account.of_key("https://user:pw@api.example:8443/v1", "sk-other-key", "$OPENAI_API_KEY")
    assert a.label != b.label and a.id != b.id
    for account, key in ((a, "sk-first-key"), (b, "sk-other-key")):
        variable, fingerprint, at, host = account.label.removeprefix("key ").split(" ")
        assert (variable, at, host) == ("$OPENAI_API_KEY", "at", "api.example:8443")
        assert len(fingerprint) == 7 and int(fingerprint[1:], 16) >= 0  # "#" and 6 hex digits
        assert key not in account.label and "pw" not in account.label
    assert Account.of_project("gemini", "p").label == "project p"


def test_status_lists_the_accounts_a_run_reserved_on_in_the_last_day_only(
    state_dir: Path,
) -> None:
    """A fresh account is listed; one last seen two days ago, and a row written before ``seen``
    was kept (a store file of the old schema: where dead mock ports were left), are not."""
    import sqlite3
    import time

    from batcher._admission.quota import spent_today
    from batcher._core.clock import quota_day

    now = time.time()
    today = quota_day(now).isoformat()
    path = state_dir / "quota.sqlite3"
    old = sqlite3.connect(path)  # the schema before ``seen``, with a mock's row of today
    old.executescript(
        "CREATE TABLE account (id TEXT PRIMARY KEY, label TEXT NOT NULL);"
        "CREATE TABLE day (account TEXT NOT NULL, model TEXT NOT NULL, day TEXT NOT NULL,"
        " spent INTEGER NOT NULL, PRIMARY KEY (account, model, day));"
        "INSERT INTO account VALUES ('mockid', 'key $OPENAI_API_KEY at http://127.0.0.1:18431/v1');"
    )
    old.execute("INSERT INTO day VALUES ('mockid', 'm', ?, 5)", (today,))
    old.commit()
    old.close()
    stale = Account.of_key("https://api.example/v1", "sk-stale", "$KEY")

    async def main() -> list[tuple[str, str, int]]:
        store = SqliteStore(path)
        await store.reserve(ACCOUNT, "m", today, 3, None)
        await store.reserve(stale, "m", today, 4, None)
        await store.aclose()
        db = sqlite3.connect(path)
        db.execute("UPDATE account SET seen=? WHERE id=?", (now - 2 * 86_400, stale.id))
        db.commit()
        db.close()
        return [(s.label, s.model, s.count) for s in await spent_today(None, now)]

    assert anyio.run(main) == [(ACCOUNT.label, "m", 3)]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    wants=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30)), max_size=40),
    limit=st.one_of(st.none(), st.integers(0, 200)),
)
def test_sqlite_grants_add_up_to_min_of_asked_and_limit(
    tmp_path: Path, wants: list[tuple[int, int]], limit: int | None
) -> None:
    path = tmp_path / f"{abs(hash((tuple(wants), limit)))}.sqlite3"

    async def main() -> tuple[int, int]:
        stores = [SqliteStore(path) for _ in range(3)]
        total = 0
        for who, want in wants:
            total += await stores[who].reserve(ACCOUNT, "m", DAY, want, limit)
        counted = sum(s.count for s in await stores[0].spent(DAY))
        for s in stores:
            await s.aclose()
        return total, counted

    total, counted = anyio.run(main)
    asked = sum(w for _, w in wants)
    assert total == counted == (asked if limit is None else min(asked, limit))


# --- lanes sharing a budget ----------------------------------------------------------------------


def _lanes(store: QuotaStore, clock: VirtualClock, limits: Limits, n: int) -> list[Lane]:
    """``n`` lanes of one account and model, each with its own holder: as ``n`` processes."""
    return [
        Lane("m", limits, clock, quota=SharedQuota(store, ACCOUNT, "m", clock, f"p{i}"))
        for i in range(n)
    ]


async def _beat(lanes: list[Lane]) -> None:
    while True:
        for lane in lanes:
            assert lane.quota is not None
            await lane.quota.beat(active=lane.has_demand())
        await anyio.sleep(1.0)


def test_two_lanes_sharing_a_budget_stay_under_its_rpm_together_and_use_it() -> None:
    clock = VirtualClock()
    limits = Limits(rpm=120)
    times: list[float] = []

    async def main() -> None:
        lanes = _lanes(MemoryStore(), clock, limits, 2)

        async def send(lane: Lane, n: int) -> None:
            for _ in range(n):
                async with lane.request(10) as slot:
                    times.append(anyio.current_time())
                    slot.done(10)

        async with anyio.create_task_group() as tg:
            tg.start_soon(_beat, lanes)
            async with anyio.create_task_group() as senders:
                for lane in lanes:
                    senders.start_soon(send, lane, 300)
            tg.cancel_scope.cancel()

    run_virtual(main)
    times.sort()
    in_any_minute = max(sum(1 for u in times if t - 60 < u <= t) for t in times)
    assert in_any_minute <= 120
    rate = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert rate >= 0.95 * 120, rate  # together they use the whole budget


def test_a_lane_left_alone_takes_the_whole_budget_once_the_others_lease_lapses() -> None:
    clock = VirtualClock()

    async def main() -> float:
        store = MemoryStore()
        alone, gone = _lanes(store, clock, Limits(rpm=60), 2)
        assert gone.quota is not None and alone.quota is not None
        await gone.quota.beat(active=True)  # then dies: never renews, never leaves
        await alone.quota.beat(active=True)
        assert alone.share == 0.5
        await anyio.sleep(LEASE_TTL + 0.5)
        await alone.quota.beat(active=True)
        return alone.share

    assert run_virtual(main) == 1.0


def test_lanes_sharing_a_budget_count_one_rpd_and_stop_together() -> None:
    clock = VirtualClock()

    async def main() -> tuple[int, list[str]]:
        lanes = _lanes(MemoryStore(), clock, Limits(rpd=25), 3)
        stops: list[str] = []

        async def send(lane: Lane) -> None:
            try:
                while True:
                    async with lane.request(1) as slot:
                        slot.done(1)
            except QuotaExhausted as e:
                stops.append(str(e))

        async with anyio.create_task_group() as tg:
            for lane in lanes:
                tg.start_soon(send, lane)
        for lane in lanes:
            assert lane.quota is not None
            await lane.quota.close()
        return sum(lane.admitted for lane in lanes), stops

    admitted, stops = run_virtual(main)
    assert admitted == 25
    assert len(stops) == 3 and all("25 requests are spent" in s for s in stops)


def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Runs started together on one new quota file: SQLite answers "database is locked" at once
    to some of them while another switches the file to WAL (its busy timeout does not cover
    that), which used to end a run with exit 2; each opener now waits its turn."""
    import threading

    failures: list[BaseException] = []
    for trial in range(40):
        path = tmp_path / f"q{trial}" / "quota.sqlite3"
        start = threading.Barrier(6)

        def open_it(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                SqliteStore(path)
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
