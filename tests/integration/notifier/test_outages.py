"""The notifier through a broker outage and a locked database, as a real process on a broker of
its own: it never stops in silence. Each alert is emailed exactly once (counted by
Message-ID), however long the broker is away while a mail goes out, and `alert.delivered` reaches
the topic once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller

from contracts import decode, encode, key_for
from contracts.topics import SAFETY_ALERTS
from services.notifier.settings import development_secrets
from tests.conftest import free_port, launcher_in
from tests.integration.kafka_io import produce_raw, read_topic
from tests.integration.notifier.test_notifier import Inbox, unique_alert, unique_rule


async def until(check: object, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still not: {what}"
        await asyncio.sleep(0.2)


async def a_locked_database_and_a_broker_outage_neither_stop_nor_repeat_anything(
    tmp_path: Path,
) -> None:
    """Run by `tests/faults/test_faults.py` beside the whole stack's outages (each waits on a
    broker of its own: side by side they take the time of the longest)."""
    launcher = launcher_in(tmp_path / "k")
    await asyncio.to_thread(launcher.up)
    rule, smtp_port, port = unique_rule(), free_port(), free_port()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "recipients:\n  safety-officer: {email: so@trial.example}\n"
        f"routes:\n  - {{match: {{rule: ['{rule}']}}, to: [safety-officer], channels: [email]}}\n"
    )
    db = tmp_path / "notifier.db"
    env = {
        **os.environ, **development_secrets(),
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": launcher.bootstrap,
        "SAFETY_MONITOR_NOTIFIER_ROUTES": str(routes),
        "SAFETY_MONITOR_NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "SAFETY_MONITOR_NOTIFIER_SMTP_PORT": str(smtp_port),
        "SAFETY_MONITOR_NOTIFIER_PORT": str(port),
        "SAFETY_MONITOR_NOTIFIER_TICK_S": "0.2",
        "SAFETY_MONITOR_NOTIFIER_RETRY_MAX_S": "1",
    }  # fmt: skip
    log = (tmp_path / "notifier.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "notifier", "serve"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

    async def metric(name: str) -> float:
        try:
            text = (await http.get("/metrics")).text
        except httpx.HTTPError:
            return -1
        return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " "))

    def mails() -> Counter[str]:
        return Counter(str(m["Message-ID"]) for m in inbox.mails)

    alerts = [unique_alert(rule) for _ in range(3)]
    try:
        # the SMTP server is away: the first alert is owed, and tried again and again
        await produce_raw(launcher.bootstrap, SAFETY_ALERTS.name, key_for(alerts[0]),
                          encode(alerts[0]))  # fmt: skip
        await until(lambda: _true(metric, "safety_monitor_notifier_consumed_total", 1),
                    "the first alert consumed")  # fmt: skip
        # the database's write lock held 8 s (past the old 5 s): the next alert waits, no more
        with sqlite3.connect(db) as held:
            held.execute("BEGIN IMMEDIATE")
            await produce_raw(launcher.bootstrap, SAFETY_ALERTS.name, key_for(alerts[1]),
                              encode(alerts[1]))  # fmt: skip
            await asyncio.sleep(8)
            held.rollback()
        await until(lambda: _true(metric, "safety_monitor_notifier_consumed_total", 2),
                    "the second alert consumed after the lock")  # fmt: skip
        # the broker goes away; the mail server comes back: each mail goes out once, and its
        # alert.delivered waits for the broker
        await asyncio.to_thread(launcher.down)
        smtp.start()
        await until(lambda: _len(mails, 2), "both alerts emailed while the broker is down")
        await asyncio.sleep(20)  # long past the old repeat (every 41 s at most 1 had shown)
        assert set(mails().values()) == {1}, mails()
        assert (await http.get("/healthz")).status_code == 200 and proc.poll() is None
        await asyncio.to_thread(launcher.up)
        await produce_raw(launcher.bootstrap, SAFETY_ALERTS.name, key_for(alerts[2]),
                          encode(alerts[2]))  # fmt: skip
        await until(lambda: _len(mails, 3), "the alert after the outage emailed")
        ours = {str(a.alert_id) for a in alerts}

        async def delivered() -> bool:
            life = await read_topic(launcher.bootstrap, "safety.alert-lifecycle")
            got = {
                str(e.alert_id) for _, v in life if (e := decode(v)).event_type == "alert.delivered"
            }  # type: ignore[union-attr]
            return ours <= got

        await until(delivered, "alert.delivered on the topic for each")
        assert set(mails().values()) == {1} and len(mails()) == 3
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and proc.poll() is None, ready.text
    finally:
        await http.aclose()
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
        if smtp.loop.is_running():
            smtp.stop()
        await asyncio.to_thread(launcher.down, purge=True)
    assert code == 0, (tmp_path / "notifier.log").read_text()[-3000:]


async def _true(metric: object, name: str, at_least: float) -> bool:
    return await metric(name) >= at_least  # type: ignore[operator,no-any-return]


async def _len(mails: object, n: int) -> bool:
    return len(mails()) >= n  # type: ignore[operator]
