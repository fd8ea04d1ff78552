"""`audit project` as ops see it: /healthz, /readyz, /metrics with its lag per topic and the age
of its last write, and a scheduled verification whose gauge falls when the trail is tampered
with. On a broker of its own: the session's topics hold other tests' conflicting ids, which a
verification rightly fails."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, launcher_in
from tests.integration.kafka_io import produce
from tests.unit.safety_rules.builders import a_participant

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _until(check: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def test_the_projection_serves_its_lag_and_a_verification_that_catches_tampering(
    tmp_path: Path,
) -> None:
    launcher = launcher_in(tmp_path / "kafka")
    await asyncio.to_thread(launcher.up)
    db, port = tmp_path / "audit.db", free_port()
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": launcher.bootstrap,
        "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
        "SAFETY_MONITOR_AUDIT_PROJECTION_PORT": str(port),
        "SAFETY_MONITOR_AUDIT_VERIFY_EVERY_S": "1",
        "SAFETY_MONITOR_AUDIT_LAG_EVERY_S": "0.3",
        "SAFETY_MONITOR_AUDIT_CHECKPOINT_EVERY": "10",  # anchored at rows 10, 20, 30
    }
    builder = a_participant("OPS-001").enrolled().dosed()
    for n in range(30):
        builder.lab("uacr", 100 + n, day=1 + n)
    events = list(builder.events())
    proc = None
    try:
        await produce(launcher.bootstrap, events)
        started = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "audit", "project"],
            env=env,
            stdout=(tmp_path / "projection.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        assert await _served(port), (tmp_path / "projection.log").read_text()[-2000:]
        metrics = lambda: _get(port, "/metrics")[1]  # noqa: E731

        def caught_up() -> bool:
            text = metrics()
            return (
                _metric(text, "safety_monitor_audit_rows_appended_total") == len(events)
                and _metric(text, 'safety_monitor_audit_consumer_lag{topic="trial.events"}') == 0
            )

        await _until(caught_up, f"{len(events)} rows appended and no lag")
        assert _get(port, "/readyz")[0] == 200
        # verified at start, then each second (a fresh trail is signed once idle for 5 s;
        # until then a chain with rows and no checkpoint rightly does not verify)
        await _until(
            lambda: _metric(metrics(), "safety_monitor_audit_chain_verified") == 1,
            "the untouched trail verified",
        )
        text = metrics()
        verified_at = _metric(text, "safety_monitor_audit_chain_verified_timestamp_seconds")
        assert verified_at is not None and verified_at > started
        assert _metric(text, "safety_monitor_audit_head_seq") == len(events)
        assert (_metric(text, "safety_monitor_audit_last_processed_age_seconds") or -1) >= 0

        # after the whole chain at start, the schedule verifies the newest segment only: from
        # the newest checkpoint anchored outside the database
        def newest_rows() -> float:
            return (
                _metric(metrics(), 'safety_monitor_audit_chain_verified_rows{scope="newest"}') or 0
            )

        await _until(
            lambda: 0 < newest_rows() < len(events), "a verification of the newest segment"
        )
        assert _metric(metrics(), "safety_monitor_audit_chain_verified") == 1

        # someone with the database file edits the newest lab in place (no key to re-sign with)
        with sqlite3.connect(db) as conn:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'"):
                conn.execute(f"DROP TRIGGER {name}")
            conn.execute(
                "UPDATE audit_log SET canonical=replace(canonical, '\"value\":129', '\"value\":29')"
            )
        await _until(
            lambda: _metric(metrics(), "safety_monitor_audit_chain_verified") == 0,
            "the gauge to fall after tampering",
            timeout_s=30,
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        await asyncio.to_thread(launcher.down, purge=True)


async def _served(port: int, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if _get(port, "/healthz")[0] == 200:
                return True
        except OSError:
            pass
        await asyncio.sleep(0.2)
    return False
