"""The two deeper checks of `safety-monitor audit verify`, beyond the chain and its anchors.

- `against_log`: every row recomputed from the message it names on the topics, and every message
  below the stored offsets accounted for (a row, a duplicate of one, a refused or a conflicting
  message). Catches an edited, deleted or rehashed row, and edited offsets, whatever the database
  says about itself: the topics are the system of record.
- `deep`: the read models rebuilt from the chain into shadow tables (an in-memory SQLite database
  of the same schema) and compared row by row with the live ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from contracts import InvalidEvent, decode
from services.audit.adapters import tables as t
from services.audit.adapters.store import AuditStore, Incoming, apply_changes, prepare
from services.audit.domain.chain import normal
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
