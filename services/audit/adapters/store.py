"""The audit store: appends to the chain, signs checkpoints, keeps read models and offsets in
the same transaction, so a crash at any point neither skips nor repeats an event."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Table, and_, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import AnyEvent, InvalidEvent
from contracts.dead_letters import accept
from contracts.events import FieldError
from contracts.topics import topic_named
from services.audit.adapters import tables as t
from services.audit.domain.chain import (
    GENESIS,
    INDEXED,
    Checkpoint,
    Row,
    Verdict,
    normal,
    row_hash,
    segment_start,
    sign,
    signed_by,
    verify,
    verify_segment,
)
from services.audit.domain.read_models import Change, alert_status, changes, channel_outcomes
from services.sql import migrate, open_engine, refused_values

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
_TABLES: dict[str, Table] = {tbl.name: tbl for tbl in t.READ_MODELS}


@dataclass(frozen=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class Appended:
    rows: int  # new audit rows
    duplicates: int  # events already in the log (redelivery, replay)
    undecodable: int
    head_seq: int
    checkpoints: int
    conflicts: int = 0  # an event_id already in the log, with other content
    head_hash: str = ""  # the chain's head after this append


class ForeignRows(RuntimeError):
    """The chain's head is not the one its one writer left: a row the projection did not write
    (inserted at the tail by someone with the database's password). Nothing is signed over it."""


def _utc(values: dict[str, Any]) -> dict[str, Any]:
    """Datetimes stored in UTC: SQLite keeps no offset, so a +07:00 time would be misread."""
    return {
        k: v.astimezone(UTC) if isinstance(v, datetime) and v.tzinfo else v
        for k, v in values.items()
    }


async def _merge(conn: AsyncConnection, c: Change) -> None:
    table = _TABLES[c.table]
    where = and_(*(table.c[k] == v for k, v in c.key.items()))
    existing = (await conn.execute(select(table).where(where))).mappings().first()
    if c.how == "increment":
        if existing is not None:
            values = {k: existing[k] + n for k, n in c.values.items()}
            await conn.execute(update(table).where(where).values(**values))
        return
    if existing is None:
        values = {**(c.defaults or {}), **c.key, **c.values}
        if "channels" in c.values:
            values["channels"] = channel_outcomes(None, c.values["channels"])
        await conn.execute(insert(table).values(_utc(values)))
        return
    if c.how == "earliest" and c.earliest and existing[c.earliest] is not None:
        known = existing[c.earliest]
        known = known.replace(tzinfo=UTC) if known.tzinfo is None else known
        if c.values[c.earliest] >= known:
            return
    values = dict(c.values)
    if "status" in values and existing.get("status"):
        values["status"] = alert_status(existing["status"], values["status"])
    if "channels" in values:
        values["channels"] = channel_outcomes(existing.get("channels"), values["channels"])
    await conn.execute(update(table).where(where).values(**_utc(values)))


async def apply_changes(conn: AsyncConnection, event: AnyEvent) -> None:
    for change in changes(event):
        await _merge(conn, change)


class AuditStore:
    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = open_engine(url)

    async def migrate(self) -> None:
        await migrate(self.engine, MIGRATIONS)

    async def close(self) -> None:
        await self.engine.dispose()

    async def offsets(self) -> dict[tuple[str, int], int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(t.audit_offsets))
            return {(r.topic, r.partition): r.next_offset for r in rows}

    async def head(self, conn: AsyncConnection | None = None) -> tuple[int, str]:
        async def read(c: AsyncConnection) -> tuple[int, str]:
            row = (
                await c.execute(
                    select(t.audit_log.c.seq, t.audit_log.c.hash)
                    .order_by(t.audit_log.c.seq.desc())
                    .limit(1)
                )
            ).first()
            return (row.seq, row.hash) if row else (0, GENESIS)

        if conn is not None:
            return await read(conn)
        async with self.engine.connect() as c:
            return await read(c)

    async def append(
        self,
        batch: list[Incoming],
        signer: Ed25519PrivateKey | None = None,
        checkpoint_every: int = 100,
        expect: tuple[int, str] | None = None,
    ) -> Appended:
        """One transaction: new rows chained onto the head, read models, offsets, and a signed
        checkpoint each `checkpoint_every` rows.

        No single message stops the trail: whatever cannot be decoded, put in UTC or turned
        into read-model changes is kept in `audit_undecodable` with the reason, and if the
        database refuses a batch's values (a constraint, a value it cannot hold) the batch is
        appended message by message, the refused one kept the same way."""
        try:
            return await self._append(batch, signer, checkpoint_every, expect=expect)
        except DBAPIError as e:
            if not refused_values(e):
                raise  # unreachable or busy: the caller retries the batch, nothing is dropped
        total = Appended(0, 0, 0, 0, 0)
        for msg in batch:
            try:
                done = await self._append([msg], signer, checkpoint_every, expect=expect)
            except DBAPIError as e:
                if not refused_values(e):
                    raise
                why = f"the database refused it: {str(e.orig).splitlines()[0][:300]}"
                done = await self._append(
                    [msg], signer, checkpoint_every, refused=why, expect=expect
                )
            if done.head_hash:
                expect = (done.head_seq, done.head_hash)
            total = Appended(
                total.rows + done.rows,
                total.duplicates + done.duplicates,
                total.undecodable + done.undecodable,
                done.head_seq,
                total.checkpoints + done.checkpoints,
                total.conflicts + done.conflicts,
                done.head_hash,
            )
        return total

    async def _append(
        self,
        batch: list[Incoming],
        signer: Ed25519PrivateKey | None,
        checkpoint_every: int,
        refused: str | None = None,
        expect: tuple[int, str] | None = None,
    ) -> Appended:
        rows = dups = bad = checkpoints = conflicts = 0
        prepared = [prepare(msg) if refused is None else (msg, None, refused) for msg in batch]
        async with self.engine.begin() as conn:
            seq, prev = await self.head(conn)
            if expect is not None and (seq, prev) != expect:
                raise ForeignRows(
                    f"the chain's head is row {seq}, not the row {expect[0]} its writer left"
                )
            ids = [p.event_id for _, p, _ in prepared if p is not None]
            known: dict[str, tuple[int, str]] = {}  # event_id -> (seq, canonical) in the log
            if ids:
                found = await conn.execute(
                    select(t.audit_log.c.event_id, t.audit_log.c.seq, t.audit_log.c.canonical)
                    .where(t.audit_log.c.event_id.in_(ids))
                )  # fmt: skip
                known = {r.event_id: (r.seq, r.canonical) for r in found}
            for msg, p, why in prepared:
                if p is None:
                    bad += await self._undecodable(conn, msg, why)
                    continue
                if p.event_id in known:
                    first_seq, first = known[p.event_id]
                    if p.canonical == first:
                        dups += 1
                    else:  # never replaces the first, never dropped in silence
                        conflicts += await self._conflict(
                            conn, msg, p.event_id, first_seq, p.canonical
                        )
                    continue
                seq += 1
                known[p.event_id] = (seq, p.canonical)
                h = row_hash(
                    prev, seq, msg.topic, msg.partition, msg.offset, p.event_id, p.canonical
                )
                await conn.execute(
                    insert(t.audit_log).values(
                        seq=seq,
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        prev_hash=prev,
                        hash=h,
                        **p.columns,
                    )
                )
                for change in p.changes:
                    await _merge(conn, change)
                prev, rows = h, rows + 1
                if signer is not None and seq % checkpoint_every == 0:
                    checkpoints += await self._checkpoint(conn, signer, seq, h)
            await self._advance(conn, batch)
        return Appended(rows, dups, bad, seq, checkpoints, conflicts, prev)

    async def checkpoint_head(
        self, signer: Ed25519PrivateKey, expect: tuple[int, str] | None = None
    ) -> bool:
        """Signs the head if it is not signed yet (on shutdown, or when the stream goes idle);
        with `expect`, only that head (ForeignRows otherwise)."""
        async with self.engine.begin() as conn:
            seq, head = await self.head(conn)
            if expect is not None and (seq, head) != expect:
                raise ForeignRows(
                    f"the chain's head is row {seq}, not the row {expect[0]} its writer left"
                )
            return bool(seq) and bool(await self._checkpoint(conn, signer, seq, head))

    async def _checkpoint(
        self, conn: AsyncConnection, signer: Ed25519PrivateKey, seq: int, head: str
    ) -> int:
        have = (
            await conn.execute(
                select(t.audit_checkpoints.c.seq).where(t.audit_checkpoints.c.seq == seq)
            )
        ).first()
        if have is not None:
            return 0
        c = sign(signer, seq, head)
        await conn.execute(
            insert(t.audit_checkpoints).values(
                seq=c.seq,
                head_hash=c.head_hash,
                key_id=c.key_id,
                signature=c.signature,
                signed_at=datetime.now(UTC),
            )
        )
        return 1

    async def _undecodable(self, conn: AsyncConnection, msg: Incoming, why: str) -> int:
        return await _keep_once(
            conn,
            t.audit_undecodable,
            msg,
            reason=_text(why),
            raw=_text(msg.value.decode("utf-8", errors="replace")),
            raw_base64=base64.b64encode(msg.value).decode(),
        )

    async def _conflict(
        self, conn: AsyncConnection, msg: Incoming, event_id: str, first_seq: int, canonical: str
    ) -> int:
        return await _keep_once(
            conn,
            t.audit_conflicts,
            msg,
            event_id=event_id,
            first_seq=first_seq,
            canonical=canonical,
            seen_at=datetime.now(UTC),
        )

    async def conflicts(self) -> list[dict[str, Any]]:
        """Messages that reused an event_id with other content, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.audit_conflicts).order_by(t.audit_conflicts.c.first_seq)
            )
            return [dict(r._mapping) for r in rows]

    async def _advance(self, conn: AsyncConnection, batch: list[Incoming]) -> None:
        last: dict[tuple[str, int], int] = {}
        for msg in batch:
            last[(msg.topic, msg.partition)] = max(
                last.get((msg.topic, msg.partition), -1), msg.offset
            )
        for (topic, partition), offset in last.items():
            where = and_(t.audit_offsets.c.topic == topic, t.audit_offsets.c.partition == partition)
            done = await conn.execute(
                update(t.audit_offsets).where(where).values(next_offset=offset + 1)
            )
            if not done.rowcount:
                await conn.execute(
                    insert(t.audit_offsets).values(
                        topic=topic, partition=partition, next_offset=offset + 1
                    )
                )

    # -- reading ------------------------------------------------------------------------------
    async def chain(self, batch: int = 2000, from_seq: int = 1) -> AsyncIterator[Row]:
        after = from_seq - 1
        async with self.engine.connect() as conn:
            while True:
                rows = (
                    await conn.execute(
                        select(t.audit_log)
                        .where(t.audit_log.c.seq > after)
                        .order_by(t.audit_log.c.seq)
                        .limit(batch)
                    )
                ).all()
                if not rows:
                    return
                for r in rows:
                    columns = {k: normal(r._mapping[k]) for k in INDEXED}
                    yield Row(
                        r.seq,
                        r.topic,
                        r.partition,
                        r.offset,
                        r.event_id,
                        r.canonical,
                        r.prev_hash,
                        r.hash,
                        columns,
                    )
                after = rows[-1].seq

    async def newest_signed(self, trusted: dict[str, Ed25519PublicKey]) -> int:
        """The seq of the newest checkpoint a trusted key signed (0: none)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.audit_checkpoints).order_by(t.audit_checkpoints.c.seq.desc())
            )
            for r in rows:
                if signed_by(Checkpoint(r.seq, r.head_hash, r.key_id, r.signature), trusted):
                    return int(r.seq)
        return 0

    async def checkpoints(self, after_seq: int = 0) -> list[Checkpoint]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.audit_checkpoints)
                .where(t.audit_checkpoints.c.seq > after_seq)
                .order_by(t.audit_checkpoints.c.seq)
            )
            return [Checkpoint(r.seq, r.head_hash, r.key_id, r.signature) for r in rows]

    async def verify(
        self, trusted: dict[str, Ed25519PublicKey], anchored: list[Checkpoint] | None = None
    ) -> Verdict:
        """The chain (against the checkpoints `anchored` outside the database, when given),
        then the conflicts: a reuse of an event_id with other content fails verification (the
        first stands, but someone wrote a second version of a fact)."""
        rows = [r async for r in self.chain()]
        return await self._with_conflicts(verify(rows, await self.checkpoints(), trusted, anchored))

    async def verify_newest(
        self, trusted: dict[str, Ed25519PublicKey], anchored: list[Checkpoint]
    ) -> Verdict:
        """The newest segment: from the newest checkpoint anchored outside the database (and
        not the newest) to the head; the whole chain when there is no such checkpoint yet."""
        checkpoints = await self.checkpoints()
        start = segment_start(checkpoints, anchored)
        if start is None:
            return await self.verify(trusted, anchored)
        rows = [r async for r in self.chain(from_seq=start)]
        return await self._with_conflicts(
            verify_segment(rows, checkpoints, trusted, anchored, start)
        )

    async def _with_conflicts(self, verdict: Verdict) -> Verdict:
        conflicts = await self.conflicts()
        if not verdict.ok or not conflicts:
            return verdict
        first = conflicts[0]
        return replace(
            verdict,
            ok=False,
            first_broken_seq=first["first_seq"],
            reason=f"{len(conflicts)} message(s) reuse an event_id with other content; first: "
            f"{first['event_id']} at {first['topic']}[{first['partition']}]@{first['offset']}",
            conflicts=len(conflicts),
        )

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(t.audit_log))).scalar_one()
            )

    # -- rebuild ------------------------------------------------------------------------------
    async def clear_read_models(self) -> None:
        async with self.engine.begin() as conn:
            for table in t.READ_MODELS:
                await conn.execute(delete(table))

    async def apply_read_models(self, events: Iterable[AnyEvent]) -> None:
        async with self.engine.begin() as conn:
            for event in events:
                await apply_changes(conn, event)

    async def dump_read_models(self) -> dict[str, list[dict[str, Any]]]:
        """Every read-model row, sorted: what `rebuild` must reproduce."""
        out: dict[str, list[dict[str, Any]]] = {}
        async with self.engine.connect() as conn:
            for table in t.READ_MODELS:
                rows = (await conn.execute(select(table))).mappings().all()
                out[table.name] = sorted(
                    (dict(r) for r in rows), key=lambda r: repr(sorted(r.items()))
                )
        return out


async def _keep_once(conn: AsyncConnection, table: Table, msg: Incoming, **values: Any) -> int:
    """A row about one message (topic, partition, offset), kept once however often it comes."""
    key = and_(
        table.c.topic == msg.topic,
        table.c.partition == msg.partition,
        table.c.offset == msg.offset,
    )
    if (await conn.execute(select(table.c.offset).where(key))).first():
        return 0
    await conn.execute(
        insert(table).values(topic=msg.topic, partition=msg.partition, offset=msg.offset, **values)
    )
    return 1


def _text(s: str) -> str:
    """Text any database stores (PostgreSQL refuses NUL in text); the bytes are kept in base64."""
    return s.replace("\x00", "\ufffd")


def _canon(event: AnyEvent) -> str:
    from contracts import encode

    return encode(event).decode()


@dataclass(frozen=True)
class _Prepared:
    """A message made ready for the log, before any database write."""

    event_id: str
    canonical: str  # one canonical form, whatever the producer wrote
    columns: dict[str, Any]  # the row's indexed columns, datetimes in UTC
    changes: list[Change]


def prepare(msg: Incoming) -> tuple[Incoming, _Prepared | None, str]:
    """The message decoded (leniently: shape and types; the catalog decides which types belong
    on its topic) and everything computed that could fail on its content: the event, the reason
    it cannot be taken."""
    topic = topic_named(msg.topic)
    try:
        if topic is None:
            raise InvalidEvent([FieldError("topic", f"{msg.topic} is not audited")])
        event = accept(msg.value, topic)
        columns = _utc(
            {
                "event_id": str(event.event_id),
                "event_type": event.event_type,
                "participant_id": getattr(event, "participant_id", None),
                "occurred_at": event.occurred_at,
                "recorded_at": event.recorded_at,
                "recorded_by": event.recorded_by,
                "reason": event.reason,
                "rule_id": getattr(event, "rule_id", None),
                "severity": getattr(getattr(event, "severity", None), "value", None),
                "canonical": _canon(event),
            }
        )
        changes_ = [replace(c, values=_utc(c.values)) for c in changes(event)]
    except InvalidEvent as e:
        return msg, None, str(e)
    except Exception as e:
        return msg, None, f"cannot be projected: {type(e).__name__}: {e}"[:2000]
    p = _Prepared(str(event.event_id), columns["canonical"], columns, changes_)
    return msg, p, ""


@dataclass(frozen=True)
class Query:
    participant_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    severity: str | None = None
    rule_id: str | None = None


def _where(q: Query) -> Any:
    c = t.audit_log.c
    conditions = [
        c.participant_id == q.participant_id if q.participant_id else None,
        c.event_type == q.event_type if q.event_type else None,
        c.occurred_at >= q.since.astimezone(UTC)
        if q.since and q.since.tzinfo
        else (c.occurred_at >= q.since if q.since else None),
        c.occurred_at < q.until.astimezone(UTC)
        if q.until and q.until.tzinfo
        else (c.occurred_at < q.until if q.until else None),
        c.severity == q.severity if q.severity else None,
        c.rule_id == q.rule_id if q.rule_id else None,
    ]
    return and_(True, *(x for x in conditions if x is not None))


class AuditReader:
    """Read-only queries for the DSMB API and the report."""

    def __init__(self, store: AuditStore) -> None:
        self.store, self.engine = store, store.engine

    async def events(self, q: Query, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.audit_log)
                .where(_where(q), t.audit_log.c.seq > after_seq)
                .order_by(t.audit_log.c.seq)
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]

    async def stream(self, q: Query, chunk: int = 1000) -> AsyncIterator[dict[str, Any]]:
        after = 0
        while True:
            rows = await self.events(q, after, chunk)
            if not rows:
                return
            for r in rows:
                yield r
            after = rows[-1]["seq"]

    async def timeline(self, participant_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.audit_log)
                .where(t.audit_log.c.participant_id == participant_id)
                .order_by(t.audit_log.c.occurred_at, t.audit_log.c.seq)
            )
            return [dict(r) for r in rows.mappings()]

    async def table(self, name: str, **equal: Any) -> list[dict[str, Any]]:
        table = _TABLES[name]
        where = and_(True, *(table.c[k] == v for k, v in equal.items() if v is not None))
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(table).where(where))
            return [dict(r) for r in rows.mappings()]

    async def head(self) -> tuple[int, str]:
        return await self.store.head()


class TokenStore:
    """Read-only DSMB tokens, stored as SHA-256 hashes (they are 32 random bytes)."""

    def __init__(self, store: AuditStore) -> None:
        self.engine = store.engine

    async def add(self, name: str) -> tuple[str, str]:
        token_id, secret = secrets.token_hex(6), f"dsmb_{secrets.token_urlsafe(32)}"
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.audit_tokens).values(
                    token_id=token_id,
                    name=name,
                    token_sha256=_sha(secret),
                    revoked=False,
                    created_at=datetime.now(UTC),
                )
            )
        return token_id, secret

    async def who(self, secret: str) -> Reader | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.audit_tokens).where(t.audit_tokens.c.token_sha256 == _sha(secret))
                )
            ).first()
        return None if row is None or row.revoked else Reader(row.token_id, row.name)

    async def revoke(self, token_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(t.audit_tokens)
                .where(t.audit_tokens.c.token_id == token_id)
                .values(revoked=True)
            )
        return bool(done.rowcount)

    async def listing(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    t.audit_tokens.c.token_id,
                    t.audit_tokens.c.name,
                    t.audit_tokens.c.revoked,
                    t.audit_tokens.c.created_at,
                ).order_by(t.audit_tokens.c.created_at)
            )
            return [dict(r._mapping) for r in rows]

    async def log_access(self, reader: Reader, route: str, query: str, status: int) -> None:
        """Who read what, when: the DSMB's reads are part of the trail."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.audit_access).values(
                    at=datetime.now(UTC),
                    token_id=reader.token_id,
                    reader=reader.name,
                    route=route[:200],
                    query=query[:4000],
                    status=status,
                )
            )

    async def accesses(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(t.audit_access).order_by(t.audit_access.c.id))
            return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class Reader:
    """A DSMB token's holder."""

    token_id: str
    name: str


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
