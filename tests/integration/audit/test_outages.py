"""The audit projection through a broker outage, as a real process on a broker of its own: it
waits the outage out (it exited after about 30 s), anchors what it signed meanwhile once the
broker is back, and stops promptly on SIGTERM while the broker is away (it took 30 s)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.audit.adapters.store import AuditStore
from services.audit.anchors import Anchors
from services.audit.keys import signing_key, trusted_keys
from services.audit.settings import AuditSettings
from services.sample import demo_trial
from tests.conftest import free_port, launcher_in
from tests.integration.kafka_io import produce


async def the_projection_waits_out_an_outage_anchors_later_and_stops_promptly(
    tmp_path: Path,
) -> None:
    """Run by `tests/faults/test_faults.py` beside the whole stack's outages (each waits on a
    broker of its own: side by side they take the time of the longest)."""
    launcher = launcher_in(tmp_path / "k")
    await asyncio.to_thread(launcher.up)
    db = tmp_path / "audit.db"
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": launcher.bootstrap,
        "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
        "SAFETY_MONITOR_AUDIT_PROJECTION_PORT": str(free_port()),
        "SAFETY_MONITOR_AUDIT_CHECKPOINT_EVERY": "10",
    }
    log = (tmp_path / "project.log").open("wb")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "audit", "project"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    store = AuditStore(env["SAFETY_MONITOR_AUDIT_DATABASE_URL"])
    events = list(demo_trial())
    proc = start()
    try:
        await produce(launcher.bootstrap, events[:40])

        async def rows() -> int:
            try:
                return (await store.head())[0]
            except Exception:  # its tables are not made yet
                return 0

        async def until(check: object, what: str, timeout_s: float = 120) -> None:
            deadline = time.monotonic() + timeout_s
            while not await check():  # type: ignore[operator]
                assert proc.poll() is None, f"audit project exited: {what}"
                assert time.monotonic() < deadline, f"still not: {what}"
                await asyncio.sleep(0.5)

        await until(lambda: _at_least(rows, 40), "the first 40 events projected")
        await asyncio.to_thread(launcher.down)
        await asyncio.sleep(40)  # past every client timeout (it exited after about 30 s)
        assert proc.poll() is None, (tmp_path / "project.log").read_text()[-3000:]
        await asyncio.to_thread(launcher.up)
        await produce(launcher.bootstrap, events[40:80])
        await until(lambda: _at_least(rows, 80), "the next 40 projected after the outage")

        settings = AuditSettings(audit_signing_key_file=tmp_path / "signing.key")
        trusted = trusted_keys(settings)
        anchors = Anchors(launcher.bootstrap)

        async def anchored_all() -> bool:
            newest = max((c.seq for c in await store.checkpoints()), default=0)
            return newest > 40 and (await anchors.newest(_kid(settings), trusted)) >= newest

        await until(anchored_all, "every checkpoint anchored once the broker is back")
        await anchors.close()

        # SIGTERM while the broker is away: out within seconds, not the clients' 30 s
        await asyncio.to_thread(launcher.down)
        await asyncio.sleep(3)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        took = time.monotonic() - started
        print(f"\nSIGTERM with the broker away: exit {code} in {took:.1f} s")
        assert code == 0 and took < 20, (tmp_path / "project.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        await store.close()
        await asyncio.to_thread(launcher.down, purge=True)


async def _at_least(count: object, n: int) -> bool:
    return await count() >= n  # type: ignore[operator,no-any-return]


def _kid(settings: AuditSettings) -> str:
    from services.audit.domain.chain import key_id

    return key_id(signing_key(settings).public_key())
