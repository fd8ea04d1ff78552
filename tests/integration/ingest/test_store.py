"""The ingest store on SQLite and on PostgreSQL: the same behaviour through the same code."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.ingest.adapters.store import Accepted, Holder, IngestStore
from services.ingest.domain.policy import Role
from services.sql import holds_write_lock


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[IngestStore]:
    s = IngestStore(database_url)
    async with s.engine.begin() as conn:  # a clean slate on a shared PostgreSQL database
        for table in (
            "ingest_accepted",
            "ingest_participants",
            "ingest_idempotency",
            "ingest_api_keys",
        ):
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    await s.create()
    try:
        yield s
    finally:
        await s.close()


def accepted(event_id: str, pid: str = "DN-1") -> Accepted:
    return Accepted(event_id, "h" * 64, "lab.resulted", pid, "trial.events", 3, 17, "site:a/key:k")


async def test_accepted_events_are_recorded_once(store: IngestStore) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await store.record([accepted(a)], [("DN-1", "T", "site-a")], "w1")
    await store.record([accepted(a), accepted(b)], [("DN-1", "T", "site-b")], "w1")  # a replay
    assert await store.accepted([a, b, str(uuid.uuid4())]) == {a: "h" * 64, b: "h" * 64}
    assert await store.sites_of(["DN-1", "DN-2"]) == {"DN-1": "site-a"}  # first enrolment wins
    assert await store.counts() == {"accepted_events": 2, "participants": 1}


async def test_one_writer_holds_an_event_id_until_it_is_recorded_or_released(
    store: IngestStore,
) -> None:
    e, now = str(uuid.uuid4()), datetime.now(UTC)
    long_ago = now - timedelta(hours=1)
    assert await store.reserve({e: "h1"}, "w1", stale_before=long_ago) == {}
    assert await store.reserve({e: "h1"}, "w2", stale_before=long_ago) == {e: Holder("h1", False)}
    assert await store.reserve({e: "h2"}, "w3", stale_before=long_ago) == {e: Holder("h1", False)}
    # a writer that died: its reservation is taken over for the same content only
    later = now + timedelta(hours=1)
    assert await store.reserve({e: "h2"}, "w3", stale_before=later) == {e: Holder("h1", False)}
    taken = (await store.reserve({e: "h1"}, "w4", stale_before=later))[e]
    # taken over by w4, as a write whose outcome is unknown (w1 may have handed it to Kafka
    # before it died): w4 reads the topic before it writes; no bytes of w1's are known
    assert taken.unknown is not None and (taken.unknown.wire, taken.content_sha256) == (b"", "h1")
    assert await store.reserve({e: "h1"}, "w5", stale_before=long_ago) == {e: Holder("h1", False)}
    await store.release([e], "w1")  # not w1's any more: nothing happens
    other = str(uuid.uuid4())  # nor when w1, still alive, records what it wrote
    await store.record(
        [Accepted(other, "h", "lab.resulted", "DN-1", "trial.events", 0, 0, "x")], [], "w1"
    )
    assert await store.reserve({e: "h1"}, "w5", stale_before=long_ago) == {e: Holder("h1", False)}
    await store.record(
        [Accepted(e, "h1", "lab.resulted", "DN-1", "trial.events", 0, 1, "x")], [], "w4"
    )
    assert await store.reserve({e: "h1"}, "w6", stale_before=long_ago) == {e: Holder("h1", True)}
    async with store.engine.connect() as conn:
        left = (await conn.execute(text("SELECT count(*) FROM ingest_reserved"))).scalar_one()
    assert left == 0


async def test_keys_are_stored_hashed_and_can_be_revoked(store: IngestStore) -> None:
    key_id, secret = await store.add_key(Role.SITE, "site-a")
    who = await store.principal(secret)
    assert who is not None and (who.role, who.site_id) == (Role.SITE, "site-a")
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT key_sha256 FROM ingest_api_keys"))).scalar_one()
    assert secret not in stored and len(stored) == 64
    assert await store.revoke_key(key_id)
    assert await store.principal(secret) is None


async def test_an_idempotency_key_remembers_the_first_answer(store: IngestStore) -> None:
    await store.remember("k1:batch", "sha-1", '{"accepted": 1}')
    await store.remember("k1:batch", "sha-2", '{"accepted": 9}')
    assert await store.remembered("k1:batch") == ("sha-1", '{"accepted": 1}')
    assert await store.ping()


async def test_a_key_revoked_by_another_process_stops_working_within_the_cache_time(
    store: IngestStore, database_url: str
) -> None:
    serving = IngestStore(database_url, key_cache_s=0.2)  # the API process
    try:
        key_id, secret = await store.add_key(Role.SITE, "site-a")
        assert await serving.principal(secret) is not None
        assert await store.revoke_key(key_id)  # the CLI, another process
        assert await serving.principal(secret) is not None  # the bounded window: cached
        await asyncio.sleep(0.3)
        assert await serving.principal(secret) is None
        assert await serving.principal("not-a-key") is None
        assert len(serving._keys) == 0  # neither the revoked nor the unknown key is kept
    finally:
        await serving.close()


async def test_two_processes_writing_one_database_each_wait_their_turn(
    store: IngestStore, database_url: str
) -> None:
    """Two ingest processes on one database (two engines: SQLite locks per connection, as it
    does across processes), 40 requests each at once, every event sent to both: each event
    is reserved by one, recorded once, and no write fails on the other's lock (a deferred
    SQLite transaction that reads, then writes after the other committed, fails at once)."""
    other = IngestStore(database_url)
    async with store.writer.begin() as conn:  # SQLite: the lock is taken at BEGIN
        assert holds_write_lock(conn) == database_url.startswith("sqlite")
    ids = [str(uuid.uuid4()) for _ in range(80)]
    long_ago = datetime.now(UTC) - timedelta(hours=1)

    async def request(s: IngestStore, owner: str, batch: list[str]) -> list[str]:
        held = await s.reserve({e: "h" for e in batch}, owner, stale_before=long_ago)
        mine = [e for e in batch if e not in held]
        rows = [Accepted(e, "h", "lab.resulted", "DN-1", "trial.events", 0, 1, "x") for e in mine]
        await s.record(rows, [], owner)
        return mine

    try:
        batches = [ids[i : i + 2] for i in range(0, len(ids), 2)]
        won = await asyncio.gather(
            *(
                request(s, f"{n}-{i}", b)
                for i, b in enumerate(batches)
                for n, s in enumerate((store, other))
            )
        )
        assert sorted(e for mine in won for e in mine) == sorted(ids)  # each once, by one
        assert await store.accepted(ids) == dict.fromkeys(ids, "h")
        assert (await store.counts())["accepted_events"] == len(ids)
    finally:
        await other.close()


async def test_the_unread_participant_index_of_an_older_database_is_dropped(
    store: IngestStore,
) -> None:
    # written by every accepted event, read by nothing: an older version made it
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE INDEX ix_ingest_accepted_participant_id ON ingest_accepted (participant_id)"
            )
        )
    await store.create()
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ingest_accepted'"
        if store.engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = 'ingest_accepted'"
    )
    async with store.engine.connect() as conn:
        indexes = {r[0] for r in await conn.execute(text(sql))}
    assert "ix_ingest_accepted_participant_id" not in indexes
    assert len(indexes) == 1  # the primary key's, which every reservation and replay reads
