"""Migration 0004 on a trail written before it: SQLite kept a `+07:00` time as its local wall
time, so verify failed an untouched trail; after 0004 every column is UTC and it verifies."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contracts import LabResulted, Source, encode
from services.audit.adapters.store import MIGRATIONS, AuditStore
from services.audit.domain.chain import GENESIS, row_hash
from services.sql import upgrade
from tests.integration.audit.test_projection import KEY, TRUSTED


async def test_0004_puts_an_old_trails_local_times_in_utc_and_it_verifies(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    async with store.engine.begin() as conn:
        await conn.run_sync(upgrade, MIGRATIONS, "alembic_version", "0003")
    at = datetime.fromisoformat("2026-01-05T08:00:00+07:00")
    lab = LabResulted(
        event_id=uuid.uuid4(), trial_id="T", participant_id="DN-OLD-1", occurred_at=at,
        recorded_at=at, recorded_by="fhir", source=Source.FHIR, analyte="creatinine",
        value=1.0, unit="mg/dL",
    )  # fmt: skip
    canonical = encode(lab).decode()
    assert json.loads(canonical)["occurred_at"].endswith("+07:00")
    h = row_hash(GENESIS, 1, "trial.events", 0, 0, str(lab.event_id), canonical)
    async with store.engine.begin() as conn:  # the row as the code before 0004 wrote it
        await conn.execute(
            text(
                'INSERT INTO audit_log (seq, topic, "partition", "offset", event_id, event_type, '
                "participant_id, occurred_at, recorded_at, recorded_by, canonical, prev_hash, "
                "hash) VALUES (1, 'trial.events', 0, 0, :id, 'lab.resulted', 'DN-OLD-1', "
                "'2026-01-05 08:00:00.000000', '2026-01-05 08:00:00.000000', 'fhir', :c, :p, :h)"
            ),
            {"id": str(lab.event_id), "c": canonical, "p": GENESIS, "h": h},
        )
    await store.checkpoint_head(KEY)
    before = await store.verify(TRUSTED)
    assert not before.ok and "occurred_at" in (before.reason or "")
    await store.migrate()
    after = await store.verify(TRUSTED)
    assert after.ok, after
    async with store.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT occurred_at FROM audit_log"))).scalar_one()
        access = (await conn.execute(text("SELECT count(*) FROM audit_access"))).scalar_one()
    assert str(stored).startswith("2026-01-05 01:00:00") and access == 0
    with pytest.raises(DBAPIError, match="append-only"):  # the trigger is back
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE audit_log SET recorded_by = 'x'"))
    await store.close()
