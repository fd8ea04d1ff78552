"""Kill the projection (SIGKILL) mid-stream and restart it: no gap, no duplicate."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from services.audit.adapters.store import AuditStore
from services.audit.keys import trusted_keys
from services.audit.projection import AUDITED
from services.audit.settings import AuditSettings
from tests.integration.kafka_io import events_in, produce, read_topic
from tests.integration.safety_rules.test_worker import unique
from tests.unit.safety_rules.builders import a_participant


def start(kafka: str, url: str, key_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": kafka,
        "SAFETY_MONITOR_AUDIT_DATABASE_URL": url,
        "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(key_file),
        "SAFETY_MONITOR_AUDIT_BATCH_MAX": "50",
        "SAFETY_MONITOR_AUDIT_CHECKPOINT_EVERY": "40",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "audit", "project"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_a_killed_projection_resumes_with_no_gap_and_no_duplicate(
    kafka: str, audit_url: str, tmp_path: Path
) -> None:
    pid = unique("CR")
    builder = a_participant(pid).enrolled().dosed()
    for n in range(600):
        builder.lab("uacr", 100 + n % 50, day=1 + n / 10)
    await produce(kafka, list(builder.events()))
    expected = set()
    for topic in AUDITED:
        expected |= {str(e.event_id) for e in events_in(await read_topic(kafka, topic), topic)}
    store = AuditStore(audit_url)
    await store.migrate()
    key_file, log = tmp_path / "signing.key", tmp_path / "projection.log"
    proc = start(kafka, audit_url, key_file, log)
    try:
        async with asyncio.timeout(60):
            while await store.count() < 100:
                await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream, no chance to clean up
        proc.wait()
        killed_at = await store.count()
        assert killed_at < len(expected), "the kill came too late to test anything"
        proc = start(kafka, audit_url, key_file, log)
        async with asyncio.timeout(120):
            while await store.count() < len(expected):
                await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # anything more would be a duplicate
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT seq, event_id FROM audit_log ORDER BY seq"))).all()
    await store.close()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))  # no gap
    assert {r.event_id for r in rows} == expected and len(rows) == len(expected)  # no duplicate
    settings = AuditSettings(audit_signing_key_file=key_file)
    verifier = AuditStore(audit_url)
    try:
        verdict = await verifier.verify(trusted_keys(settings))
    finally:
        await verifier.close()
    assert verdict.ok and verdict.checkpoints >= 2, verdict
