"""The audit projection on the real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import traceback
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contracts import AlertRaised, Severity, encode, topic_for
from services.audit.adapters.store import AuditStore, Incoming
from services.audit.domain.chain import key_id
from services.audit.projection import LagProbe, project
from services.sample import one_of_each
from tests.integration.kafka_io import produce
from tests.integration.safety_rules.test_worker import unique

KEY = Ed25519PrivateKey.generate()
TRUSTED = {key_id(KEY.public_key()): KEY.public_key()}


async def test_events_in_rows_out_in_order_and_the_chain_verifies(
    kafka: str, audit_store: AuditStore
) -> None:
    events = one_of_each(unique("AU"))
    await produce(kafka, events)
    await caught_up(kafka, audit_store)
    verdict = await audit_store.verify(TRUSTED)
    assert verdict.ok, verdict
    assert verdict.checkpoints >= 1
    async with audit_store.engine.connect() as conn:
        seqs = [r.seq for r in await conn.execute(text("SELECT seq FROM audit_log ORDER BY seq"))]
        alerts = (await conn.execute(text("SELECT status FROM rm_alerts"))).all()
    assert seqs == list(range(1, len(seqs) + 1))  # no gap
    assert ("resolved",) in alerts  # raised -> delivered -> escalated -> acknowledged -> resolved
    assert ("withdrawn",) in alerts  # a correction removed another alert's evidence


async def caught_up(bootstrap: str, store: AuditStore, timeout_s: float = 120) -> None:
    """Runs the projection until it has projected every audited partition to its end; if it
    does not, says which partitions lag and what the projection was doing."""
    stop = asyncio.Event()
    task = asyncio.create_task(project(bootstrap, store, KEY, stop, checkpoint_every=5))
    async with LagProbe(bootstrap) as probe:
        try:
            async with asyncio.timeout(timeout_s):
                while await probe.lag(store):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.2)
        except TimeoutError:
            behind = await probe.behind(store)
            stack = "".join(traceback.format_stack(task.get_stack()[-1])) if not task.done() else ""
            raise AssertionError(
                f"not caught up in {timeout_s:g} s; behind: {behind}; projection "
                f"{'done' if task.done() else 'running'} at:\n{stack}"
            ) from None
        finally:
            stop.set()
            await task


async def test_the_same_events_replayed_twice_leave_the_tables_identical(
    kafka: str, audit_store: AuditStore
) -> None:
    events = one_of_each(unique("RP"))
    await produce(kafka, events)
    await caught_up(kafka, audit_store)
    snapshot = (await audit_store.count(), await audit_store.dump_read_models())
    assert snapshot[0] >= len(events)
    await produce(kafka, events)  # the same event_ids again: a replay on the topics
    await caught_up(kafka, audit_store)
    batch = [Incoming(topic_for(e).name, 0, 10**9 + n, encode(e)) for n, e in enumerate(events)]
    result = await audit_store.append(batch)  # and a redelivery straight to the store
    assert result.rows == 0 and result.duplicates == len(events)
    assert (await audit_store.count(), await audit_store.dump_read_models()) == snapshot
    assert (await audit_store.verify(TRUSTED)).ok


async def test_no_update_or_delete_touches_the_log_and_an_altered_row_is_named(
    kafka: str, audit_store: AuditStore, audit_url: str
) -> None:
    await audit_store.append(
        [
            Incoming("trial.events", 0, n, encode(e))
            for n, e in enumerate(one_of_each(unique("TM")))
        ],
        KEY,
    )
    for statement in (
        "UPDATE audit_log SET canonical = 'x' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with audit_store.engine.begin() as conn:
                await conn.execute(text(statement))
    # by hand, as someone with the database owner's rights might
    await _tamper(
        audit_store,
        audit_url,
        "UPDATE audit_log SET canonical = "
        "replace(canonical, 'Flank pain', 'Back pain') WHERE seq = 5",
    )
    verdict = await audit_store.verify(TRUSTED)
    assert (verdict.ok, verdict.first_broken_seq) == (False, 5)


async def _tamper(store: AuditStore, url: str, statement: str) -> Any:
    async with store.engine.begin() as conn:
        if url.startswith("postgresql"):
            await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            await conn.execute(text(statement))
            await conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER audit_log_no_update"))
            await conn.execute(text(statement))


async def test_the_catalog_decides_and_a_second_version_of_an_event_is_a_conflict(
    audit_store: AuditStore,
) -> None:
    """An alert produced onto trial.events is refused; a forged copy of a real alert (same
    event_id, severity lowered) on safety.alerts never replaces it, and verify names it."""
    events = one_of_each(unique("CF"))
    (alert,) = [e for e in events if isinstance(e, AlertRaised)][:1]
    forged = alert.model_copy(update={"severity": Severity.INFO, "title": "nothing to see"})
    garbage = b"\xff\xfe not utf-8 \x00"
    result = await audit_store.append(
        [
            Incoming("trial.events", 0, 1, encode(forged)),  # the wrong topic for an alert
            Incoming("trial.events", 0, 2, garbage),
            Incoming("safety.alerts", 0, 1, encode(alert)),
            Incoming("safety.alerts", 0, 2, encode(forged)),  # the same event_id, other content
            Incoming("safety.alerts", 0, 3, encode(alert)),  # a true redelivery
        ],
        KEY,
        checkpoint_every=1,
    )
    assert (result.rows, result.undecodable, result.conflicts, result.duplicates) == (1, 2, 1, 1)
    async with audit_store.engine.connect() as conn:
        severity = (await conn.execute(text("SELECT severity FROM rm_alerts"))).scalar_one()
        refused = (
            await conn.execute(
                text('SELECT reason, raw_base64 FROM audit_undecodable ORDER BY "offset"')
            )
        ).all()
    assert severity == alert.severity.value == "critical"
    assert "alert.raised does not belong on trial.events" in refused[0].reason
    assert base64.b64decode(refused[1].raw_base64) == garbage  # the exact bytes, kept
    verdict = await audit_store.verify(TRUSTED)
    assert not verdict.ok and verdict.conflicts == 1
    assert str(alert.event_id) in (verdict.reason or "")
    # the same conflicting message delivered again is not counted twice
    again = await audit_store.append([Incoming("safety.alerts", 0, 2, encode(forged))])
    assert again.conflicts == 0 and (await audit_store.verify(TRUSTED)).conflicts == 1


async def test_a_value_the_database_cannot_hold_is_kept_aside_and_the_trail_goes_on(
    audit_store: AuditStore, audit_url: str
) -> None:
    """Decoding on replay checks no lengths, so an alert whose rule_id is longer than its column
    (varchar(60) on PostgreSQL) can reach the store straight from the topic."""
    events = one_of_each(unique("DB"))
    (alert,) = [e for e in events if isinstance(e, AlertRaised)][:1]
    long = alert.model_copy(update={"rule_id": "r" * 100})
    batch = [
        Incoming(topic_for(e).name, 0, n, encode(e)) for n, e in enumerate(events) if e != alert
    ]
    batch.insert(2, Incoming("safety.alerts", 0, 99, encode(long)))
    result = await audit_store.append(batch, KEY, checkpoint_every=1)
    refused = 1 if audit_url.startswith("postgresql") else 0  # SQLite does not check lengths
    assert (result.rows, result.undecodable) == (len(batch) - refused, refused)
    async with audit_store.engine.connect() as conn:
        kept = (await conn.execute(text("SELECT reason FROM audit_undecodable"))).scalars().all()
    assert len(kept) == refused and all("database refused" in k for k in kept)
    assert (await audit_store.verify(TRUSTED)).ok
    assert (await audit_store.offsets())[("safety.alerts", 0)] == 100
