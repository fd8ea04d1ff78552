"""A channel that cannot send an alert after its retries: the recipient's other channels send
it, the live page says which failed, and the DSMB's register shows it failed beside the one
that delivered (never only "delivered")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller

from contracts import decode, encode, key_for
from contracts.topics import SAFETY_ALERTS
from services.audit.adapters.store import AuditStore, Incoming, TokenStore
from services.audit.api import create_app
from services.notifier.bootstrap import build
from tests.conftest import free_port
from tests.integration.audit.test_projection import TRUSTED
from tests.integration.kafka_io import produce_raw, wait_for
from tests.integration.notifier.test_notifier import (
    Inbox,
    settings_for,
    unique_alert,
    unique_rule,
    until,
)  # fmt: skip


async def test_a_failing_webhook_gives_way_to_email_and_the_register_names_it(
    kafka: str, tmp_path: Path
) -> None:
    inbox, smtp_port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    rule = unique_rule()
    dead_hook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens
    settings = settings_for(kafka, tmp_path, smtp_port, dead_hook, rule)
    parts = build(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    try:
        a = unique_alert(rule)
        mine = str(a.alert_id)
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(a), encode(a))

        def mails() -> list[str]:
            return [str(m["X-Safety-Monitor-Key"]) for m in inbox.mails
                    if a.participant_id in str(m["Subject"])]  # fmt: skip

        # the first email, then the webhook's third failure sends it by email once more
        await until(lambda: any("|instead|safety-officer|email" in k for k in mails()), 90)
        board = {r["alert_id"]: r for r in await parts.notifier.board()}
        assert board[mine]["failing"] == ["safety-officer webhook"]

        def told(messages: list[tuple[bytes | None, bytes]]) -> bool:
            kinds = [decode(v).event_type for k, v in messages if k == mine.encode()]
            return "alert.delivered" in kinds and kinds.count("alert.delivery_failed") >= 3

        life = await wait_for(kafka, "safety.alert-lifecycle", told)
    finally:
        stop.set()
        await running
        await parts.notifier.store.close()
        smtp.stop()

    # the register, from these very messages
    audit = AuditStore(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    await audit.migrate()
    ours = [v for k, v in life if k == mine.encode()]
    lifecycle = [Incoming("safety.alert-lifecycle", 0, n, v) for n, v in enumerate(ours)]
    await audit.append([Incoming("safety.alerts", 0, 0, encode(a)), *lifecycle])
    _, token = await TokenStore(audit).add("dsmb")
    app = create_app(audit, TRUSTED)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        items = (await c.get("/alerts", headers={"Authorization": f"Bearer {token}"})).json()
    (row,) = [r for r in items["items"] if r["alert_id"] == mine]
    assert row["status"] == "delivered"
    assert row["channels"] == {"email": "delivered", "webhook": "failed"}
    assert row["failed_channels"] == ["webhook"]
    await audit.close()
