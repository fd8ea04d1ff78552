"""The notifier's transactional outbox: the alerts it tracks, the messages it owes, and the
offsets it consumed, in one SQL database (SQLite by default, PostgreSQL tested).

A consumed batch, the trackers it changed and the outbox rows the desk decided commit in one
transaction, so a crash neither loses a message nor decides it twice (the outbox key is the
message's deterministic key). The sender marks a row sent after the channel accepted it; a
crash between the two sends it again with the same Message-ID / Idempotency-Key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import (
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertWithdrawn,
    AnyEvent,
    Channel,
    InvalidEvent,
    decode,
    encode,
)
from contracts.dead_letters import accept
from contracts.topics import topic_named
from services.notifier.domain.desk import Kind, Message, Status, Tracked, due
from services.notifier.domain.routes import Delivery, Routes
from services.sql import insert_for, migrate, open_engine, refused_values

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
VERSION_TABLE = "notifier_alembic_version"

metadata = MetaData()
offsets = Table(
    "notifier_offsets",
    metadata,
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)
alerts = Table(
    "notifier_alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("participant_id", String(100), nullable=True),
    Column("severity", String(16), nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("raised", Text, nullable=False),  # the alert.raised event, canonical JSON
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("level", Integer, nullable=False),
    Column("reminded", Boolean, nullable=False),
    Column("noticed", Boolean, nullable=False),
    Column("withdrawn_noticed", Boolean, nullable=False),
    Column("told", Text, nullable=False),  # JSON [[recipient, channel], ...]
    Column("acknowledged_by", String(200), nullable=True),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    Column("first_delivered_at", DateTime(timezone=True), nullable=True),
)
# Lifecycle facts (delivered, delivery_failed, escalated) recorded with what they record and
# produced from here by their own loop: a slow or absent broker holds back no message and
# repeats none (a message is marked sent in the same transaction as its facts are kept).
facts = Table(
    "notifier_facts",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("alert_id", String(36), nullable=False),  # the topic's key
    Column("value", Text, nullable=False),  # the event, canonical JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
)
outbox = Table(
    "notifier_outbox",
    metadata,
    Column("key", String(500), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("alert_ids", Text, nullable=False),  # JSON list
    Column("recipient", String(200), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("address", String(500), nullable=False),
    Column("level", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pending, sent
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
)


@dataclass(frozen=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: datetime  # the broker's: when the notifier's source received it


@dataclass(frozen=True)
class Owed:
    """An outbox row the sender owes."""

    message: Message
    attempts: int
    created_at: datetime


# What a message's content can raise while it is folded, besides values the database refuses:
# arithmetic on its times (a deadline in year 9999). Nothing broader: a bug must stop the
# notifier where ops see it, not refuse every alert in silence.
_CONTENT_ERRORS = (ArithmeticError,)


class NotifierStore:
    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = open_engine(url)
        self._raised: dict[str, AlertRaised] = {}  # decoded once: alerts are immutable

    def _alert(self, alert_id: str, raised: str) -> AlertRaised:
        if (a := self._raised.get(alert_id)) is None:
            decoded = decode(raised.encode())
            assert isinstance(decoded, AlertRaised)
            a = self._raised[alert_id] = decoded
        return a

    async def migrate(self) -> None:
        await migrate(self.engine, MIGRATIONS, VERSION_TABLE)

    async def close(self) -> None:
        await self.engine.dispose()

    async def offsets(self) -> dict[tuple[str, int], int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(offsets))
            return {(r.topic, r.partition): r.next_offset for r in rows}

    async def apply(self, batch: list[Incoming], routes: Routes, now: datetime) -> list[str]:
        """One transaction: the batch folded into the trackers, the messages now due put in
        the outbox, the offsets advanced. Returns the reasons of refused messages.

        One message never stops the notifier: if folding a batch fails on its content (a value
        the database or the arithmetic cannot take), the batch is applied message by message
        and the one that fails alone is refused, its offset passed."""
        try:
            return await self._apply(batch, routes, now)
        except (DBAPIError, *_CONTENT_ERRORS) as e:
            if isinstance(e, DBAPIError) and not refused_values(e):
                raise  # unreachable or busy: the consumer stops and resumes from its offsets
            if len(batch) == 1:
                where = f"{batch[0].topic}[{batch[0].partition}]@{batch[0].offset}"
                why = f"{where}: cannot be folded: {type(e).__name__}"
                return [why, *await self._apply(batch, routes, now, skip=True)]
        return [why for msg in batch for why in await self.apply([msg], routes, now)]

    async def _apply(
        self, batch: list[Incoming], routes: Routes, now: datetime, skip: bool = False
    ) -> list[str]:
        refused = []
        async with self.engine.begin() as conn:
            for msg in [] if skip else batch:
                topic = topic_named(msg.topic)
                try:
                    if topic is None:
                        raise InvalidEvent([])
                    event = accept(msg.value, topic)
                except InvalidEvent as e:
                    refused.append(f"{msg.topic}[{msg.partition}]@{msg.offset}: {e}")
                    continue
                await _fold(conn, event, msg.timestamp)
            await self._decide(conn, routes, now)
            await _advance(conn, batch)
        return refused

    async def decide(self, routes: Routes, now: datetime) -> int:
        """The desk at `now` (group windows closing, escalations, reminders): rows added."""
        async with self.engine.begin() as conn:
            return await self._decide(conn, routes, now)

    async def _decide(self, conn: AsyncConnection, routes: Routes, now: datetime) -> int:
        rows = (
            await conn.execute(
                select(alerts).where(
                    (alerts.c.status == Status.OPEN.value)
                    | ((alerts.c.status == Status.WITHDRAWN.value) & ~alerts.c.withdrawn_noticed)
                )
            )
        ).all()
        tracked = [_tracked(r, self._alert(r.alert_id, r.raised)) for r in rows]
        before = {t.alert_id: _state(t) for t in tracked}
        messages = due(tracked, now, routes)
        for t in tracked:
            if _state(t) != before[t.alert_id]:
                await conn.execute(
                    update(alerts).where(alerts.c.alert_id == t.alert_id).values(**_state(t))
                )
        insert = insert_for(conn)
        if messages:
            await conn.execute(
                insert(outbox)
                .values([_row(m, now) for m in messages])
                .on_conflict_do_nothing(index_elements=["key"])
            )
        return len(messages)

    async def owed(self, now: datetime, limit: int = 100) -> list[Owed]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox)
                .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
                .order_by(outbox.c.created_at, outbox.c.key)
                .limit(limit)
            )
            return [
                Owed(
                    Message(
                        r.key,
                        Kind(r.kind),
                        Delivery(r.recipient, Channel(r.channel), r.address),
                        tuple(json.loads(r.alert_ids)),
                        r.level,
                    ),
                    r.attempts,
                    _aware(r.created_at),
                )
                for r in rows
            ]

    async def sent(
        self, key: str, alert_ids: Iterable[str], now: datetime, told: Iterable[AnyEvent] = ()
    ) -> None:
        """The message `key` sent, with the lifecycle facts that say so (kept to produce)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox).where(outbox.c.key == key).values(status="sent", sent_at=now)
            )
            await _keep_facts(conn, told, now)
            await conn.execute(
                update(alerts)
                .where(
                    alerts.c.alert_id.in_(list(alert_ids)), alerts.c.first_delivered_at.is_(None)
                )
                .values(first_delivered_at=now)
            )

    async def retry(
        self, key: str, attempts: int, at: datetime, error: str, told: Iterable[AnyEvent] = ()
    ) -> None:
        """The message `key` failed `attempts` times; tried again at `at`."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.key == key)
                .values(attempts=attempts, next_attempt_at=at, last_error=error[:2000])
            )
            await _keep_facts(conn, told, at)

    async def instead(self, m: Message, ways: list[Delivery], now: datetime) -> int:
        """Owes `m`'s alerts on `ways` (its channel failed); each once. Returns how many new."""
        rows = [
            _row(replace(m, key=f"{m.key}|instead|{d.recipient}|{d.channel.value}", delivery=d),
                 now)
            for d in ways
        ]  # fmt: skip
        if not rows:
            return 0
        async with self.engine.begin() as conn:
            done = await conn.execute(insert_for(conn)(outbox).on_conflict_do_nothing(), rows)
            return int(done.rowcount or 0)

    async def failing(self, attempts: int) -> dict[str, list[str]]:
        """alert_id -> the "recipient channel" of each message about it still owed after
        `attempts` failed tries (the live page says so)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.alert_ids, outbox.c.recipient, outbox.c.channel).where(
                    outbox.c.status == "pending", outbox.c.attempts >= attempts
                )
            )
            out: dict[str, list[str]] = {}
            for r in rows:
                for alert_id in json.loads(r.alert_ids):
                    out.setdefault(alert_id, []).append(f"{r.recipient} {r.channel}")
            return out

    async def facts(self, limit: int = 500) -> list[tuple[str, str, bytes]]:
        """Lifecycle facts not produced yet, oldest first: (event_id, alert_id, value)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(facts.c.event_id, facts.c.alert_id, facts.c.value)
                .order_by(facts.c.created_at, facts.c.event_id)
                .limit(limit)
            )
            return [(r.event_id, r.alert_id, r.value.encode()) for r in rows]

    async def produced(self, event_ids: list[str]) -> None:
        if event_ids:
            async with self.engine.begin() as conn:
                await conn.execute(facts.delete().where(facts.c.event_id.in_(event_ids)))

    async def alerts(self, ids: Iterable[str]) -> dict[str, AlertRaised]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(alerts).where(alerts.c.alert_id.in_(list(ids))))
            return {r.alert_id: self._alert(r.alert_id, r.raised) for r in rows}

    async def tracker(self, alert_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(alerts).where(alerts.c.alert_id == alert_id))).first()
            return dict(row._mapping) if row else None

    async def acknowledge(self, alert_id: str, by: str, at: datetime) -> bool:
        """True when this acknowledged an open alert; False when it was already final."""
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(alerts)
                .where(alerts.c.alert_id == alert_id, alerts.c.status == Status.OPEN.value)
                .values(status=Status.ACKNOWLEDGED.value, acknowledged_by=by, acknowledged_at=at)
            )
            return bool(done.rowcount)

    async def unacknowledge(self, alert_id: str, by: str) -> None:
        """Undo `acknowledge(alert_id, by, ...)` (its lifecycle fact could not be produced)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(alerts)
                .where(alerts.c.alert_id == alert_id, alerts.c.acknowledged_by == by,
                       alerts.c.status == Status.ACKNOWLEDGED.value)
                .values(status=Status.OPEN.value, acknowledged_by=None, acknowledged_at=None)
            )  # fmt: skip

    async def board(self) -> list[dict[str, Any]]:
        """Every tracked alert, newest first (the live page and the metrics)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(alerts).order_by(alerts.c.seen_at.desc()))
            return [dict(r._mapping) for r in rows]

    async def depth(self) -> int:
        async with self.engine.connect() as conn:
            q = select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
            return int((await conn.execute(q)).scalar_one())


async def _fold(conn: AsyncConnection, event: AnyEvent, seen_at: datetime) -> None:
    if isinstance(event, AlertRaised):
        insert = insert_for(conn)
        await conn.execute(
            insert(alerts)
            .values(
                alert_id=str(event.alert_id),
                participant_id=event.participant_id,
                severity=event.severity.value,
                rule_id=event.rule_id,
                raised=encode(event).decode(),
                seen_at=seen_at,
                status=Status.OPEN.value,
                level=0,
                reminded=False,
                noticed=False,
                withdrawn_noticed=False,
                told="[]",
            )
            .on_conflict_do_nothing(index_elements=["alert_id"])
        )
        return
    alert_id = str(getattr(event, "alert_id", ""))
    where = alerts.c.alert_id == alert_id
    if isinstance(event, AlertAcknowledged):
        await conn.execute(
            update(alerts)
            .where(where, alerts.c.status == Status.OPEN.value)
            .values(
                status=Status.ACKNOWLEDGED.value,
                acknowledged_by=event.acknowledged_by,
                acknowledged_at=event.occurred_at,
            )
        )
    elif isinstance(event, AlertResolved):
        await conn.execute(update(alerts).where(where).values(status=Status.RESOLVED.value))
    elif isinstance(event, AlertWithdrawn):
        await conn.execute(
            update(alerts)
            .where(where, alerts.c.status != Status.WITHDRAWN.value)
            .values(status=Status.WITHDRAWN.value)
        )


async def _keep_facts(conn: AsyncConnection, told: Iterable[AnyEvent], now: datetime) -> None:
    rows = [
        {"event_id": str(e.event_id), "alert_id": str(getattr(e, "alert_id", "")),
         "value": encode(e).decode(), "created_at": now}
        for e in told
    ]  # fmt: skip
    if rows:
        await conn.execute(insert_for(conn)(facts).on_conflict_do_nothing(), rows)


async def _advance(conn: AsyncConnection, batch: list[Incoming]) -> None:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic, m.partition)] = max(last.get((m.topic, m.partition), -1), m.offset)
    insert = insert_for(conn)
    for (topic, partition), offset in last.items():
        await conn.execute(
            insert(offsets)
            .values(topic=topic, partition=partition, next_offset=offset + 1)
            .on_conflict_do_update(
                index_elements=["topic", "partition"], set_={"next_offset": offset + 1}
            )
        )


def _tracked(r: Any, raised: AlertRaised) -> Tracked:
    return Tracked(
        alert=raised,
        seen_at=_aware(r.seen_at),
        status=Status(r.status),
        level=r.level,
        reminded=r.reminded,
        noticed=r.noticed,
        told={(a, b) for a, b in json.loads(r.told)},
        withdrawn_noticed=r.withdrawn_noticed,
    )


def _state(t: Tracked) -> dict[str, Any]:
    return {
        "level": t.level,
        "reminded": t.reminded,
        "noticed": t.noticed,
        "withdrawn_noticed": t.withdrawn_noticed,
        "told": json.dumps(sorted(t.told)),
    }


def _row(m: Message, now: datetime) -> dict[str, Any]:
    return {
        "key": m.key,
        "kind": m.kind.value,
        "alert_ids": json.dumps(list(m.alert_ids)),
        "recipient": m.delivery.recipient,
        "channel": m.delivery.channel.value,
        "address": m.delivery.address,
        "level": m.level,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
