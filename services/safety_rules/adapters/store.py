"""The rules worker's state and consumed offsets, in one SQL database, written in one transaction.

The audit projection's proven pattern, for a consumer group: each input partition has a row with
the next offset to read and an *epoch*. A worker that is assigned a partition claims it (epoch + 1)
and every later write for that partition is conditional on the epoch it claimed, so a worker that
lost the partition (a rebalance it has not heard of yet, a paused process, a zombie) can no
longer write it: its transaction is refused as a whole (`Fenced`), and the new owner carries on
from what was committed. State and offsets move together or not at all.

SQLite (the default; several worker processes on one machine share the file) and PostgreSQL
(several machines). The participant state is derived data: an empty database is rebuilt by
replaying `trial.events` from the start, which is kept forever.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.sql import insert_for, open_engine, sqlite_immediate, sqlite_wal

log = logging.getLogger("safety_rules.store")

metadata = MetaData()
# Every row belongs to one worker group (`RULES_APP_ID`): groups sharing a database never meet.
partitions = Table(
    "rules_partitions",
    metadata,
    Column("app_id", String(200), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=True),  # None: never read, start at the beginning
    Column("epoch", BigInteger, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
participants = Table(
    "rules_participants",
    metadata,
    Column("app_id", String(200), primary_key=True),
    Column("participant_id", String(100), primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Index("ix_rules_participants_partition", "app_id", "partition"),
)
trials = Table(
    "rules_trials",
    metadata,
    Column("app_id", String(200), primary_key=True),
    Column("trial_id", String(100), primary_key=True),
    Column("state", LargeBinary, nullable=False),
)

TP = tuple[str, int]

# A batch's commit, built once (statements built per call cost more than SQLite running them):
# every partition's offset moved in one executemany, each only while its epoch is still ours.
_ADVANCE = (
    update(partitions)
    .where(
        partitions.c.app_id == bindparam("b_app_id"),
        partitions.c.topic == bindparam("b_topic"),
        partitions.c.partition == bindparam("b_partition"),
        partitions.c.epoch == bindparam("b_epoch"),
    )
    .values(next_offset=bindparam("b_next_offset"), updated_at=bindparam("b_updated_at"))
)
_UPSERTS: dict[tuple[str, str], Any] = {}


class Fenced(Exception):
    """Another worker claimed these partitions since we did: nothing of the batch was written."""

    def __init__(self, lost: list[TP]) -> None:
        super().__init__(f"partitions claimed by another worker: {sorted(lost)}")
        self.lost = lost


@dataclass(frozen=True)
class Claim:
    epoch: int
    next_offset: int | None


@dataclass
class Commit:
    """One batch's writes: each partition's next offset under the epoch claimed for it, and the
    states it changed (participant id -> (partition, state); trial id -> state)."""

    offsets: dict[TP, tuple[int, int]]  # tp -> (epoch, next_offset)
    participants: dict[str, tuple[int, bytes]]
    trials: dict[str, bytes]


class RulesStore:
    def __init__(self, url: str, app_id: str) -> None:
        self.app_id = app_id
        sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = open_engine(url, connect_args={"timeout": 60} if sqlite else {})
        # reads: on SQLite, a second engine whose transactions do not take the write lock, so a
        # worker reads states while its own commit (written behind) or another's waits on disk
        self.reader = self.engine
        if sqlite:
            # several worker processes on one file: readers beside the writer, and each
            # transaction takes the write lock at BEGIN, so writers queue on the busy timeout
            sqlite_wal(self.engine)
            sqlite_immediate(self.engine)
            self.reader = open_engine(url, connect_args={"timeout": 60})
            sqlite_wal(self.reader)

    async def migrate(self) -> None:
        """Creates the tables once. Two workers starting together on a fresh database race to
        create them; the loser's CREATE fails and it finds them made by the winner."""
        for attempt in (1, 2):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                return
            except DBAPIError:
                if attempt == 2:
                    raise
                log.info("tables created concurrently by another worker")

    async def close(self) -> None:
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()

    async def claim(self, tps: Iterable[TP], owner: str) -> dict[TP, Claim]:
        """Takes ownership of `tps`: a new epoch for each, and where to resume reading."""
        tps = sorted(tps)
        if not tps:
            return {}
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            insert = insert_for(conn)
            await conn.execute(
                insert(partitions)
                .values(
                    [
                        {
                            "app_id": self.app_id,
                            "topic": t,
                            "partition": p,
                            "next_offset": None,
                            "epoch": 0,
                            "owner": owner,
                            "updated_at": now,
                        }
                        for t, p in tps
                    ]
                )
                .on_conflict_do_nothing()
            )
            for t, p in tps:
                await conn.execute(
                    update(partitions)
                    .where(self._partition(t, p))
                    .values(epoch=partitions.c.epoch + 1, owner=owner, updated_at=now)
                )
            rows = await conn.execute(
                select(partitions).where(or_(*(self._partition(t, p) for t, p in tps)))
            )
            return {(r.topic, r.partition): Claim(r.epoch, r.next_offset) for r in rows}

    async def load_states(self, participant_ids: Iterable[str]) -> dict[str, bytes]:
        """participant id -> stored state, for those of `participant_ids` the database has."""
        wanted = sorted(set(participant_ids))
        out: dict[str, bytes] = {}
        async with self.reader.connect() as conn:
            for i in range(0, len(wanted), 500):
                rows = await conn.execute(
                    select(participants.c.participant_id, participants.c.state).where(
                        participants.c.app_id == self.app_id,
                        participants.c.participant_id.in_(wanted[i : i + 500]),
                    )
                )
                out.update((r.participant_id, r.state) for r in rows)
        return out

    async def participant_ids(self, partition: int) -> list[str]:
        """Every participant whose state is stored for this events partition."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(
                select(participants.c.participant_id).where(
                    participants.c.app_id == self.app_id, participants.c.partition == partition
                )
            )
            return sorted(r.participant_id for r in rows)

    async def load_trials(self) -> dict[str, bytes]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(select(trials).where(trials.c.app_id == self.app_id))
            return {r.trial_id: r.state for r in rows}

    async def commit(self, batch: Commit) -> None:
        """All of it or none: raises Fenced when any partition's epoch moved on."""
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            moves = [
                {"b_app_id": self.app_id, "b_topic": t, "b_partition": p, "b_epoch": epoch,
                 "b_next_offset": next_offset, "b_updated_at": now}
                for (t, p), (epoch, next_offset) in sorted(batch.offsets.items())
            ]  # fmt: skip
            if moves and conn.dialect.supports_sane_multi_rowcount:
                done = await conn.execute(_ADVANCE, moves)
                if done.rowcount != len(moves):  # some epoch moved on: which, then roll back
                    raise Fenced(await self._fenced(conn, batch.offsets))
            elif moves:
                lost = [
                    tp
                    for tp, m in zip(sorted(batch.offsets), moves, strict=True)
                    if (await conn.execute(_ADVANCE, m)).rowcount != 1
                ]
                if lost:
                    raise Fenced(lost)  # rolls the transaction back
            insert = insert_for(conn)
            await _upsert(
                conn,
                insert,
                participants,
                ("app_id", "participant_id"),
                [
                    {
                        "app_id": self.app_id,
                        "participant_id": pid,
                        "partition": part,
                        "state": state,
                    }
                    for pid, (part, state) in sorted(batch.participants.items())
                ],
            )
            await _upsert(
                conn,
                insert,
                trials,
                ("app_id", "trial_id"),
                [
                    {"app_id": self.app_id, "trial_id": k, "state": v}
                    for k, v in sorted(batch.trials.items())
                ],
            )

    async def _fenced(self, conn: AsyncConnection, offsets: dict[TP, tuple[int, int]]) -> list[TP]:
        """The partitions of `offsets` whose epoch in the database is no longer ours."""
        rows = await conn.execute(
            select(partitions.c.topic, partitions.c.partition, partitions.c.epoch).where(
                partitions.c.app_id == self.app_id
            )
        )
        now = {(r.topic, r.partition): r.epoch for r in rows}
        return [tp for tp, (epoch, _) in sorted(offsets.items()) if now.get(tp) != epoch]

    def _partition(self, topic: str, partition: int) -> Any:
        return and_(
            partitions.c.app_id == self.app_id,
            partitions.c.topic == topic,
            partitions.c.partition == partition,
        )

    async def offsets(self) -> dict[TP, int]:
        """Each partition's next offset to read (what the worker has processed and committed)."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(select(partitions).where(partitions.c.app_id == self.app_id))
            return {
                (r.topic, r.partition): r.next_offset for r in rows if r.next_offset is not None
            }


async def _upsert(
    conn: AsyncConnection,
    insert: Any,
    table: Table,
    key: tuple[str, ...],
    rows: list[Mapping[str, Any]],
) -> None:
    if not rows:
        return
    built = _UPSERTS.get((conn.dialect.name, table.name))
    if built is None:
        stmt = insert(table)
        changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
        built = stmt.on_conflict_do_update(index_elements=list(key), set_=changed)
        _UPSERTS[(conn.dialect.name, table.name)] = built
    await conn.execute(built, rows)
