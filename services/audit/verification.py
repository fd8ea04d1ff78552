"""The two deeper checks of `safety-monitor audit verify`, beyond the chain and its anchors.

- `against_log`: every row recomputed from the message it names on the topics, and every message
  below the stored offsets accounted for (a row, a duplicate of one, a refused or a conflicting
  message). Catches an edited, deleted or rehashed row, and edited offsets, whatever the database
  says about itself: the topics are the system of record.
- `deep`: the read models rebuilt from the chain into shadow tables (an in-memory SQLite database
  of the same schema) and compared row by row with the live ones.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from contracts import InvalidEvent, decode
from services.audit.adapters import tables as t
from services.audit.adapters.store import AuditStore, Incoming, apply_changes, prepare
from services.audit.anchors import Anchors
from services.audit.domain.chain import Verdict, normal
from services.audit.projection import audited_partitions
from services.sql import open_engine

Position = tuple[str, int, int]


async def against_log(bootstrap: str, store: AuditStore) -> list[str]:
    """What does not hold between the database and the topics (empty: everything holds)."""
    offsets = await store.offsets()
    rows = {(r.topic, r.partition, r.offset): r async for r in store.chain()}
    by_event = {r.event_id: r for r in rows.values()}
    async with store.engine.connect() as conn:
        refused = {
            (r.topic, r.partition, r.offset)
            for table in (t.audit_undecodable, t.audit_conflicts)
            for r in await conn.execute(select(table.c.topic, table.c.partition, table.c.offset))
        }
    problems: list[str] = []
    seen: set[Position] = set()
    parts = await audited_partitions(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        for tp, end in ends.items():
            stored = offsets.get((tp.topic, tp.partition), 0)
            if stored > end:
                problems.append(
                    f"stored offset {stored} of {tp.topic}[{tp.partition}] is past the "
                    f"topic's end {end}"
                )
        stop = {tp: min(ends[tp], offsets.get((tp.topic, tp.partition), 0)) for tp in parts}
        while [tp for tp in parts if await consumer.position(tp) < stop[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000, max_records=2000)).items():
                for r in records:
                    if r.offset >= stop[tp]:
                        continue
                    where = (tp.topic, tp.partition, r.offset)
                    seen.add(where)
                    why = _account(Incoming(*where, r.value or b""), rows, by_event, refused)
                    if why:
                        problems.append(why)
    finally:
        await consumer.stop()
    for where, row in rows.items():
        if where not in seen:
            problems.append(
                f"row {row.seq} names {_at(where)}, which is past the stored offsets or not "
                "on the topic"
            )
    return problems


def _account(
    msg: Incoming, rows: dict[Position, Any], by_event: dict[str, Any], refused: set[Position]
) -> str | None:
    where = (msg.topic, msg.partition, msg.offset)
    _, p, _ = prepare(msg)
    row = rows.get(where)
    if row is not None:
        if p is None or p.event_id != row.event_id or p.canonical != row.canonical:
            return f"row {row.seq} differs from the message at {_at(where)}"
        return None
    if where in refused:
        return None
    first = by_event.get(p.event_id) if p is not None else None
    if p is not None and first is not None and first.canonical == p.canonical:
        return None  # a duplicate of a row in the log
    return f"the message at {_at(where)} is in no row of the log (deleted?)"


async def verified(
    store: AuditStore,
    trusted: dict[str, Ed25519PublicKey],
    anchors: Anchors | None,
    *,
    newest_only: bool = False,
    signer: str | None = None,
) -> Verdict:
    """The verdict `audit verify`, `GET /audit/verify` and the projection's scheduled check
    give: the chain and its signatures, against the anchors when there are some, and the rows
    nothing has signed yet against the topics (a row inserted at the tail is otherwise a
    correctly chained row). The tail unread (the broker away) is not a pass. The keys
    trusted are those the anchor topic hands the chain to (pinned by the first, then by
    signed rotations, `chain.trust_chain`): a signing key replaced without a rotation fails,
    whatever the configuration trusts; `signer`, the key the projection signs with, too."""
    if anchors is not None:
        chain_keys, problems = await anchors.trust(trusted, signer)
        if problems:
            return Verdict(False, 0, 0, None, problems[0])
        trusted = chain_keys or trusted  # (nothing anchored yet: the configured keys)
    anchored = await anchors.read(trusted) if anchors is not None else None
    if newest_only and anchored is not None:
        verdict = await store.verify_newest(trusted, anchored)
    else:
        verdict = await store.verify(trusted, anchored)
    if not verdict.ok or anchors is None or not verdict.unsigned_tail:
        return verdict
    signed = await store.newest_signed(trusted)
    try:
        problems = await tail_against_log(anchors.bootstrap, store, signed)
    except Exception as e:  # the broker away: not verified
        why = f"the {verdict.unsigned_tail} row(s) after checkpoint {signed} could not be read "
        return replace(verdict, ok=False, reason=why + f"against the topics ({type(e).__name__})")
    if problems:
        return replace(
            verdict, ok=False, first_broken_seq=signed + 1,
            reason=f"a row the projection did not write: {problems[0]}",
        )  # fmt: skip
    return verdict


async def tail_against_log(
    bootstrap: str, store: AuditStore, after_seq: int, timeout_s: float = 30.0
) -> list[str]:
    """The rows after `after_seq` (the newest signed checkpoint: rows nothing signed yet) each
    compared with the message it names on the topics. A row inserted at the tail by anyone
    but the projection is correctly chained, and nothing else can tell it apart: the
    projection checks its tail so before it signs, and `verify` so before it answers."""
    tail = [r async for r in store.chain(from_seq=after_seq + 1)]
    if not tail:
        return []
    problems: list[str] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        for row in tail:
            tp = TopicPartition(row.topic, row.partition)
            consumer.assign([tp])
            consumer.seek(tp, row.offset)
            found = None
            async with asyncio.timeout(timeout_s):
                while found is None:
                    records = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                    if not records:
                        ends = await consumer.end_offsets([tp])
                        if ends[tp] <= row.offset:
                            break
                    found = next((r for r in records if r.offset == row.offset), None)
                    if records and records[-1].offset > row.offset:
                        break
            where = (row.topic, row.partition, row.offset)
            if found is None:
                problems.append(f"row {row.seq} names {_at(where)}, which is not on the topic")
                continue
            _, p, _ = prepare(Incoming(*where, found.value or b""))
            if p is None or p.event_id != row.event_id or p.canonical != row.canonical:
                problems.append(f"row {row.seq} differs from the message at {_at(where)}")
    finally:
        await consumer.stop()
    return problems


def _at(where: Position) -> str:
    return f"{where[0]}[{where[1]}]@{where[2]}"


async def deep(store: AuditStore) -> list[str]:
    """Read-model tables whose live rows differ from the chain's rebuild (empty: all equal)."""
    shadow = open_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with shadow.begin() as conn:
            await conn.run_sync(t.metadata.create_all, tables=list(t.READ_MODELS))
            async for row in store.chain():
                try:
                    event = decode(row.canonical)
                except InvalidEvent:
                    continue  # the projection refused it too: it never reached a read model
                await apply_changes(conn, event)
        rebuilt = await _dump(shadow)
    finally:
        await shadow.dispose()
    live = await _dump(store.engine)
    problems = []
    for table in t.READ_MODELS:
        want, have = rebuilt[table.name], live[table.name]
        if want != have:
            missing, extra = sum((want - have).values()), sum((have - want).values())
            problems.append(
                f"{table.name}: {extra} live row(s) not in the rebuild, {missing} rebuilt "
                "row(s) not live"
            )
    return problems


async def _dump(engine: Any) -> dict[str, Counter[tuple[tuple[str, str | None], ...]]]:
    out = {}
    async with engine.connect() as conn:
        for table in t.READ_MODELS:
            rows = (await conn.execute(select(table))).mappings().all()
            out[table.name] = Counter(
                tuple(sorted((k, normal(v)) for k, v in r.items())) for r in rows
            )
    return out
