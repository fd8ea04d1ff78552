"""Ingest's own SQL state: accepted event ids, the participant registry, idempotency keys and
hashed API keys. SQLite by default, PostgreSQL by URL, through the same SQLAlchemy code."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.domain.policy import Principal, Role, spelling_key
from services.sql import (
    GroupCommit,
    Prepared,
    exclusive,
    holds_write_lock,
    in_list,
    insert_for,
    open_engine,
    sqlite_immediate,
    sqlite_path,
    sqlite_wal,
    when,
)

metadata = MetaData()

accepted = Table(
    "ingest_accepted",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("content_sha256", String(64), nullable=False),
    Column("event_type", String(40), nullable=False),
    # no index on participant_id: nothing reads by it, and a random insert into one more
    # B-tree cost SQLite about a page written to its log per event
    Column("participant_id", String(64), nullable=False),
    Column("topic", String(100), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", Integer, nullable=False),
    Column("recorded_by", String(200), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)
participants = Table(
    "ingest_participants",
    metadata,
    Column("participant_id", String(64), primary_key=True),
    Column("trial_id", String(200), nullable=False),
    Column("site_id", String(200), nullable=False),
)
# An event_id being written: reserved before the Kafka write, deleted when it is recorded as
# accepted (or released when the write failed). One writer per event_id.
reserved = Table(
    "ingest_reserved",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("content_sha256", String(64), nullable=False),
    Column("owner", String(32), nullable=False),
    Column("reserved_at", DateTime(timezone=True), nullable=False),
)
# A write whose outcome is unknown: handed to Kafka, never acknowledged (a timeout, a broker
# that went away). Its exact bytes (the first stamping's recorded_at) are kept until the topic
# says whether it landed: a retry of the same content is answered from them (found on the
# topic, or sent again as they are), never stamped anew; other content under its id is a
# conflict. `sent_at`: when it was handed over (the topic is read from there).
unknown = Table(
    "ingest_unknown",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("content_sha256", String(64), nullable=False),
    Column("wire", LargeBinary, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)
# The site each participant's first enrolment claimed, before it was written: fixes the site
# against a race of two sites enrolling one participant at once.
site_claims = Table(
    "ingest_site_claims",
    metadata,
    Column("participant_id", String(64), primary_key=True),
    Column("site_id", String(200), nullable=False),
)
# Each participant's spelling, by its spelling key (policy.spelling_key): the first enrolment's
# spelling holds it, so dn-101 and DN_101 cannot become two more participants beside DN-101.
spellings = Table(
    "ingest_spellings",
    metadata,
    Column("spelling_key", String(64), primary_key=True),
    Column("participant_id", String(64), nullable=False),
)
# The service's own secrets, made at its first start: `ids` keys imported records' event ids
# (policy.scoped_to_site). It never leaves the database.
secrets_table = Table(
    "ingest_secrets",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", String(128), nullable=False),
)
idempotency = Table(
    "ingest_idempotency",
    metadata,
    Column("key", String(300), primary_key=True),  # principal key_id + the client's key
    Column("request_sha256", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
api_keys = Table(
    "ingest_api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("key_sha256", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("site_id", String(200), nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


_PARTICIPANT_INDEX = "ix_ingest_accepted_participant_id"


class Unknown(NamedTuple):
    """A write whose outcome is unknown (see the table `unknown`)."""

    event_id: str
    content_sha256: str
    wire: bytes
    sent_at: datetime


@dataclass(frozen=True)
class Holder:
    """Who holds an event_id another request wanted: accepted already, or being written; or,
    with `unknown`, a write of it whose outcome is unknown (the id is then reserved for the
    request that asked, to settle it)."""

    content_sha256: str
    accepted: bool
    unknown: Unknown | None = None


class Accepted(NamedTuple):  # (a tuple: made for every event, at a third of a dataclass's cost)
    event_id: str
    content_sha256: str
    event_type: str
    participant_id: str
    topic: str
    partition: int
    offset: int
    recorded_by: str


SITES_KEPT = 200_000

# The statements of every request, built once: an expression built per call costs more than the
# SQLite statement it runs (its construction, then its cache key, at each execution). The id
# lists bind as one parameter each (`{"ids": [...]}`, `in_list`).
_ACCEPTED_HASHES = select(accepted.c.event_id, accepted.c.content_sha256).where(
    in_list(accepted.c.event_id, "ids")
)
_RESERVED = select(reserved).where(in_list(reserved.c.event_id, "ids"))
_RESERVED_BY_OTHERS = _RESERVED.where(reserved.c.owner != bindparam("owner"))
_UNRESERVE = reserved.delete().where(
    in_list(reserved.c.event_id, "ids"),
    in_list(reserved.c.owner, "owners"),
)
_DONE_WITH = reserved.delete().where(in_list(reserved.c.owner, "owners"))
# ... and the writer's statements of every request, run as their text (`Prepared`)
_ACCEPTED_HASHES_TEXT = Prepared(_ACCEPTED_HASHES)
_RESERVED_TEXT = Prepared(_RESERVED)
_RESERVED_BY_OTHERS_TEXT = Prepared(_RESERVED_BY_OTHERS)
_DONE_WITH_TEXT = Prepared(_DONE_WITH)
_RESERVE_ROWS = Prepared(
    lambda conn: _insert_new(conn, reserved, "event_id", stamped="reserved_at"),
    columns=("event_id", "content_sha256", "owner"),
)
_ACCEPT_ROWS = Prepared(
    lambda conn: _insert_new(conn, accepted, "event_id", stamped="accepted_at"),
    columns=Accepted._fields,
)
_UNKNOWN_TEXT = Prepared(select(unknown).where(in_list(unknown.c.event_id, "ids")))
_SETTLED = unknown.delete().where(in_list(unknown.c.event_id, "ids"))
_SPELLINGS = select(spellings.c.spelling_key, spellings.c.participant_id).where(
    in_list(spellings.c.spelling_key, "ids")
)
_CLAIMED = select(site_claims).where(in_list(site_claims.c.participant_id, "ids"))
_SITES = select(participants.c.participant_id, participants.c.site_id).where(
    in_list(participants.c.participant_id, "ids")
)
_OWNERS = select(accepted.c.event_id, accepted.c.participant_id).where(
    in_list(accepted.c.event_id, "ids")
)
_ON_CONFLICT: dict[tuple[str, str, str | None], Any] = {}


def _insert_new(conn: Connection, table: Table, key: str, stamped: str | None = None) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING in the connection's dialect, built once each;
    the column `stamped` set to the database's time (a timestamp bound with each row cost more
    than the row's other columns together)."""
    built = (conn.dialect.name, table.name, stamped)
    found = _ON_CONFLICT.get(built)
    if found is None:
        found = insert_for(conn)(table).on_conflict_do_nothing(index_elements=[key])
        if stamped is not None:
            found = found.values({stamped: func.now()})
        _ON_CONFLICT[built] = found
    return found


def _hash_key(secret: str) -> str:
    # API keys are 32 random bytes: a plain SHA-256 cannot be brute-forced, unlike a password.
    return hashlib.sha256(secret.encode()).hexdigest()


class IngestStore:
    def __init__(self, url: str, *, key_cache_s: float = 5.0) -> None:
        self.engine: AsyncEngine = open_engine(url)
        # writes: on SQLite an engine whose transactions take the write lock at BEGIN, so
        # several ingest processes can share one database file (each waits its turn)
        self.writer: AsyncEngine = self.engine
        if sqlite_path(url) is not None:
            sqlite_wal(self.engine)
            self.writer = open_engine(url)
            sqlite_wal(self.writer)
            sqlite_immediate(self.writer)
        # concurrent requests' writes share one transaction and one commit (SQLite has one
        # writer); each request's outcome stays its own
        self.writes = GroupCommit(self.writer)
        self._sites: dict[str, str] = {}  # participant -> site, as read (see sites_of)
        # valid keys, read at most every key_cache_s: a key revoked by another process (the
        # CLI) stops working within that; one revoked here stops at once. Unknown keys are
        # never cached (a guesser cannot fill the memory).
        self.key_cache_s = key_cache_s
        self._keys: dict[str, tuple[Principal, float]] = {}
        self._id_secret: bytes | None = None

    async def create(self) -> None:
        """Creates the tables once, however many processes start together on a new database."""
        async with exclusive(self.engine, "migrate-ingest"), self.writer.begin() as conn:
            await conn.run_sync(metadata.create_all)
            # made by versions before it was dropped (see `accepted`)
            await conn.execute(text(f"DROP INDEX IF EXISTS {_PARTICIPANT_INDEX}"))
            await conn.execute(
                insert_for(conn)(secrets_table).on_conflict_do_nothing(),
                [{"name": "ids", "value": secrets.token_hex(32)}],
            )
            found = await conn.execute(
                select(secrets_table.c.value).where(secrets_table.c.name == "ids")
            )
            self._id_secret = bytes.fromhex(found.scalar_one())
            # participants claimed before spellings were kept hold theirs
            claimed = (await conn.execute(select(site_claims.c.participant_id))).scalars()
            keyed = {spelling_key(p): p for p in sorted(claimed, reverse=True)}
            if keyed:
                await conn.execute(
                    insert_for(conn)(spellings).on_conflict_do_nothing(),
                    [{"spelling_key": k, "participant_id": p} for k, p in keyed.items()],
                )

    @property
    def id_secret(self) -> bytes:
        """The key of imported records' ids (made, or read, by `create`)."""
        if self._id_secret is None:
            raise RuntimeError("IngestStore.create() was not run: the id secret is not read")
        return self._id_secret

    async def close(self) -> None:
        await self.writes.close()
        await self.engine.dispose()
        if self.writer is not self.engine:
            await self.writer.dispose()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
            return True
        except Exception:  # readiness reports any failure as not ready
            return False

    # -- keys ---------------------------------------------------------------------------------
    async def add_key(self, role: Role, site_id: str | None) -> tuple[str, str]:
        """A new key: (key_id, secret). Only the hash is stored; the secret is shown once."""
        key_id, secret = secrets.token_hex(6), f"sm_{secrets.token_urlsafe(32)}"
        async with self.writer.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    key_sha256=_hash_key(secret),
                    role=role.value,
                    site_id=site_id,
                    revoked=False,
                    created_at=datetime.now(UTC),
                )
            )
        return key_id, secret

    async def principal(self, secret: str) -> Principal | None:
        digest = _hash_key(secret)
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(api_keys).where(api_keys.c.key_sha256 == digest))
            ).first()
        if row is None or row.revoked:
            self._keys.pop(digest, None)
            return None
        who = Principal(key_id=row.key_id, role=Role(row.role), site_id=row.site_id)
        if self.key_cache_s > 0:
            self._keys[digest] = (who, time.monotonic() + self.key_cache_s)
        return who

    async def revoke_key(self, key_id: str) -> bool:
        async with self.writer.begin() as conn:
            done = await conn.execute(
                api_keys.update().where(api_keys.c.key_id == key_id).values(revoked=True)
            )
        self._keys = {k: v for k, v in self._keys.items() if v[0].key_id != key_id}
        return bool(done.rowcount)

    # -- events -------------------------------------------------------------------------------
    async def _lookup(self, statement: Any, ids: Iterable[str]) -> dict[str, str]:
        """{first column: second} of `statement`'s rows for `ids`."""
        wanted = list(set(ids))
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(statement, {"ids": wanted})
            return {r[0]: r[1] for r in rows}

    async def accepted(self, event_ids: Iterable[str]) -> dict[str, str]:
        """event_id -> content hash, for the ids already accepted."""
        return await self._lookup(_ACCEPTED_HASHES, event_ids)

    async def sites_of(self, participant_ids: Iterable[str]) -> dict[str, str]:
        """participant_id -> site, for the participants already enrolled. A participant's
        site never changes once enrolled (a second site's enrolment is refused), so a site
        read once is kept (up to SITES_KEPT participants)."""
        wanted = set(participant_ids)
        known = {p: self._sites[p] for p in wanted if p in self._sites}
        read = await self._lookup(_SITES, wanted - known.keys())
        self._keep_sites(read)
        return known | read

    def _keep_sites(self, sites: dict[str, str]) -> None:
        """Sites read, or registered by an enrolment recorded here (a registered site is
        final)."""
        if len(self._sites) + len(sites) > SITES_KEPT:
            self._sites.clear()
        self._sites.update(sites)

    async def owners_of(self, event_ids: Iterable[str]) -> dict[str, str]:
        """event_id -> participant_id, for the events already accepted."""
        return await self._lookup(_OWNERS, event_ids)

    # Each write below takes one item and joins the transaction of the concurrent requests'
    # writes (GroupCommit); its `_many` twin writes all the items of a transaction at once.

    async def reserve(
        self, claims: dict[str, str], owner: str, stale_before: datetime
    ) -> dict[str, Holder]:
        """Reserves each event_id (-> content hash) for `owner`. Returns who holds the ids it
        could not reserve; a reservation older than `stale_before` for the same content (its
        writer died) is taken over."""
        return await self.writes.run(_reserve_many, _Claim(claims, owner, stale_before))

    async def release(self, event_ids: list[str], owner: str) -> None:
        if event_ids:
            await self.writes.run(_release_many, (event_ids, owner))

    async def claim_sites(
        self, enrolling: list[tuple[str, str]]
    ) -> tuple[dict[str, str], set[str]]:
        """Claims each (participant, site) before its enrolment is written: the first claim
        fixes a participant's site, however many requests race. Returns participant -> the
        site that holds it, and the participants this call claimed first (to `unclaim` if
        its request is refused). (The registry is written once an enrolment is accepted.)"""
        if not enrolling:
            return {}, set()
        return await self.writes.run(_claim_sites_many, enrolling)

    async def spellings(self, keys: Iterable[str]) -> dict[str, str]:
        """spelling key -> the participant_id that holds it, for the keys held."""
        return await self._lookup(_SPELLINGS, keys)

    async def unclaim(self, participant_ids: set[str]) -> None:
        """Drops claims a refused request made: a refused enrolment claims no participant
        (one already registered keeps its claim)."""
        if participant_ids:
            async with self.writer.begin() as conn:
                await conn.execute(
                    site_claims.delete().where(
                        in_list(site_claims.c.participant_id, "ids"),
                        ~site_claims.c.participant_id.in_(select(participants.c.participant_id)),
                    ),
                    {"ids": sorted(participant_ids)},
                )
                await conn.execute(
                    spellings.delete().where(
                        in_list(spellings.c.participant_id, "ids"),
                        ~spellings.c.participant_id.in_(select(site_claims.c.participant_id)),
                    ),
                    {"ids": sorted(participant_ids)},
                )

    async def record(
        self, rows: list[Accepted], enrolled: list[tuple[str, str, str]], owner: str
    ) -> None:
        """Records accepted events and new enrolments (participant, trial, site), and drops
        every reservation `owner` holds (a request records once, after all its writes ended);
        rows already there are left as they are."""
        if rows:
            # the registry's sites of those enrolled (the first enrolment's, whatever these say)
            self._keep_sites(await self.writes.run(_record_many, (rows, enrolled, owner)))

    async def mark_unknown(self, rows: list[Unknown]) -> None:
        """Keeps writes whose outcome is unknown; a row already kept stays as it is (the
        first stamping's bytes are the ones a retry gets)."""
        if rows:
            await self.writes.run(_mark_unknown_many, rows)

    async def settled(self, event_ids: list[str]) -> None:
        """Unknown outcomes now known (recorded as accepted, or found accepted)."""
        if event_ids:
            async with self.writer.begin() as conn:
                await conn.execute(_SETTLED, {"ids": event_ids})

    async def unknown(self, event_ids: Iterable[str] | None = None) -> dict[str, Unknown]:
        """The unknown writes of `event_ids` (None: all of them), by event_id."""
        query = select(unknown)
        if event_ids is not None:
            wanted = list(set(event_ids))
            if not wanted:
                return {}
            query = query.where(in_list(unknown.c.event_id, "ids"))
        async with self.engine.connect() as conn:
            rows = await conn.execute(query, {"ids": wanted} if event_ids is not None else {})
            return {
                r.event_id: Unknown(r.event_id, r.content_sha256, bytes(r.wire), when(r.sent_at))
                for r in rows
            }  # fmt: skip

    async def remembered(self, key: str) -> tuple[str, str] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(idempotency).where(idempotency.c.key == key))).first()
        return (row.request_sha256, row.response) if row else None

    async def remember(self, key: str, request_sha256: str, response: str) -> None:
        async with self.writer.begin() as conn:
            have = (
                await conn.execute(select(idempotency.c.key).where(idempotency.c.key == key))
            ).first()
            if have is None:
                await conn.execute(
                    idempotency.insert().values(
                        key=key,
                        request_sha256=request_sha256,
                        response=response,
                        created_at=datetime.now(UTC),
                    )
                )

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            events = len((await conn.execute(select(accepted.c.event_id))).all())
            people = len((await conn.execute(select(participants.c.participant_id))).all())
        return {"accepted_events": events, "participants": people}


@dataclass(frozen=True)
class _Claim:
    claims: dict[str, str]  # event_id -> content hash
    owner: str
    stale_before: datetime


def _reserve_many(conn: Connection, items: list[_Claim]) -> list[dict[str, Holder]]:
    ids = list({eid for item in items for eid in item.claims})
    now = datetime.now(UTC)
    done = _ACCEPTED_HASHES_TEXT.run(conn, {"ids": ids})
    taken = {r.event_id: r.content_sha256 for r in done}
    free = [eid for eid in ids if eid not in taken]
    if free:
        rows = [
            (eid, digest, item.owner)
            for item in items
            for eid, digest in item.claims.items()
            if eid not in taken
        ]
        _RESERVE_ROWS.run_many(conn, rows)
        if not holds_write_lock(conn):
            # accepted meanwhile (its writer recorded it between our statements): not ours
            late = _ACCEPTED_HASHES_TEXT.run(conn, {"ids": free})
            taken.update((r.event_id, r.content_sha256) for r in late)
            gone = [e for e in free if e in taken]
            if gone:
                conn.execute(_UNRESERVE, {"ids": gone, "owners": [i.owner for i in items]})
    # event_id -> (owner, content hash, reserved at). With the write lock held from BEGIN and
    # one request in the transaction, only the rows others hold are read: the rest are its own.
    # Without the lock (PostgreSQL) another request may record or release a row between our
    # statements, so every row is read, and one gone meanwhile is asked for again.
    alone = len(items) == 1 and holds_write_lock(conn)
    held = {
        r.event_id: (r.owner, r.content_sha256, when(r.reserved_at))
        for r in (
            (_RESERVED_BY_OTHERS_TEXT if alone else _RESERVED_TEXT).run(
                conn, {"ids": free, "owner": items[0].owner} if alone else {"ids": free}
            )
            if free
            else []
        )
    }
    # writes of these ids whose outcome is unknown: whoever reserves one settles it
    pending = {
        r.event_id: Unknown(r.event_id, r.content_sha256, bytes(r.wire), when(r.sent_at))
        for r in (_UNKNOWN_TEXT.run(conn, {"ids": free}) if free else [])
    }  # fmt: skip
    out: list[dict[str, Holder]] = []
    for item in items:
        mine: dict[str, Holder] = {}
        for eid, digest in item.claims.items():
            if eid in taken:
                mine[eid] = Holder(taken[eid], True)
                continue
            found = held.get(eid)
            if found is None:
                if not alone:  # gone between our statements: in flight, asked for again
                    mine[eid] = Holder(digest, False)
                elif eid in pending:
                    mine[eid] = Holder(pending[eid].content_sha256, False, pending[eid])
                continue  # (alone: ours)
            owner, content, since = found
            if owner == item.owner:
                if eid in pending:
                    mine[eid] = Holder(pending[eid].content_sha256, False, pending[eid])
                continue
            if content == digest and since < item.stale_before:
                # a writer that died left it: taken over, for the same content only
                conn.execute(
                    reserved.update()
                    .where(reserved.c.event_id == eid, reserved.c.owner == owner)
                    .values(owner=item.owner, reserved_at=now)
                )
                held[eid] = (item.owner, content, now)
                # its writer may have handed it to Kafka before it died: settled like an
                # unknown write (read from the topic), its bytes unknown (b"")
                mine[eid] = Holder(
                    content, False, pending.get(eid, Unknown(eid, content, b"", since))
                )
                continue
            mine[eid] = Holder(content, False)
        out.append(mine)
    return out


def _mark_unknown_many(conn: Connection, items: list[list[Unknown]]) -> list[None]:
    rows = [r._asdict() for item in items for r in item]
    conn.execute(_insert_new(conn, unknown, "event_id"), rows)
    return [None] * len(items)


def _release_many(conn: Connection, items: list[tuple[list[str], str]]) -> list[None]:
    for event_ids, owner in items:
        conn.execute(_UNRESERVE, {"ids": event_ids, "owners": [owner]})
    return [None] * len(items)


def _claim_sites_many(
    conn: Connection, items: list[list[tuple[str, str]]]
) -> list[tuple[dict[str, str], set[str]]]:
    first = {p: s for item in reversed(items) for p, s in reversed(item)}  # the first claim wins
    known = {r.participant_id for r in conn.execute(_CLAIMED, {"ids": list(first)})}
    claiming = [p for p in first if p not in known]
    if claiming:
        conn.execute(
            _insert_new(conn, site_claims, "participant_id"),
            [{"participant_id": p, "site_id": first[p]} for p in claiming],
        )
        conn.execute(
            _insert_new(conn, spellings, "spelling_key"),
            [{"spelling_key": spelling_key(p), "participant_id": p} for p in claiming],
        )
    rows = conn.execute(_CLAIMED, {"ids": list(first)})
    sites = {r.participant_id: r.site_id for r in rows}
    out, taken = [], set(known)
    for item in items:  # each new claim is the first claiming item's
        new = {p for p, s in item if p not in taken and sites[p] == s}
        taken |= new
        out.append(({p: sites[p] for p, _ in item}, new))
    return out


def _record_many(
    conn: Connection, items: list[tuple[list[Accepted], list[tuple[str, str, str]], str]]
) -> list[dict[str, str]]:
    """Each item's rows and enrolments recorded; returns, per item, the registered site of each
    participant it enrolled."""
    # a request records once, when every write of it has ended: all its reservations go
    _DONE_WITH_TEXT.run(conn, {"owners": [o for _, _, o in items]})
    new: dict[str, Accepted] = {}
    for rows, _, _ in items:
        for r in rows:
            new.setdefault(r.event_id, r)
    if new:  # a row already there (a replay) is left as it is
        _ACCEPT_ROWS.run_many(conn, list(new.values()))
    enrolled = {p: (t, s) for _, people, _ in reversed(items) for p, t, s in reversed(people)}
    if enrolled:
        conn.execute(
            _insert_new(conn, participants, "participant_id"),
            [{"participant_id": p, "trial_id": t, "site_id": s} for p, (t, s) in enrolled.items()],
        )
        sites = {r[0]: r[1] for r in conn.execute(_SITES, {"ids": list(enrolled)})}
        return [{p: sites[p] for p, _, _ in people} for _, people, _ in items]
    return [{} for _ in items]
