"""The live page in headless Chromium (Debian's, driven by Playwright): a new alert appears
without a reload; clicking acknowledge changes its row and puts alert.acknowledged on the topic;
the audit register shows it acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import text

from contracts import encode, key_for
from contracts.topics import SAFETY_ALERTS
from services.audit.adapters.store import AuditStore, Incoming
from services.notifier.bootstrap import build
from tests.conftest import free_port
from tests.integration.browser import FLAGS, chromium_or_skip
from tests.integration.kafka_io import produce_raw, wait_for
from tests.integration.notifier.test_notifier import settings_for, unique_alert, unique_rule


@pytest.fixture
def chromium() -> str:
    return chromium_or_skip()


async def test_a_new_alert_appears_live_and_is_acknowledged_with_one_click(
    kafka: str, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright

    rule = unique_rule()
    settings = settings_for(kafka, tmp_path, free_port(), "http://127.0.0.1:9/none", rule)
    settings.notifier_api_tokens = "safety-officer:officer-token"  # type: ignore[assignment]
    settings = settings.model_validate(settings.model_dump())
    parts = build(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(parts.app, port=port, log_config=None, lifespan="off",
                       timeout_graceful_shutdown=1)
    )  # fmt: skip
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    served = asyncio.create_task(server.serve())
    audit = AuditStore(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    await audit.migrate()
    try:
        while not (server.started and parts.notifier.consuming):
            await asyncio.sleep(0.05)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=chromium, headless=True, args=FLAGS
            )
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.fill("input[name=token]", "officer-token")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#live:text('live')")

            a = unique_alert(rule)
            await produce_raw(kafka, SAFETY_ALERTS.name, key_for(a), encode(a))
            row = page.locator(f"tr[data-alert-id='{a.alert_id}']")
            await row.wait_for(timeout=30000)  # pushed, no reload
            assert await row.locator("td.status").inner_text() == "open"
            assert a.participant_id in await row.inner_text()
            await row.locator("button.ack").click()
            await page.wait_for_selector(
                f"tr[data-alert-id='{a.alert_id}'] td.status:text('acknowledged by safety-officer')"
            )
            await browser.close()

        mine = str(a.alert_id).encode()
        life = await wait_for(
            kafka, "safety.alert-lifecycle",
            lambda m: any(k == mine and b'"alert.acknowledged"' in v for k, v in m),
        )  # fmt: skip
        # the audit store takes these very messages (projecting the whole session's topics
        # would only add every other test's events)
        ours = [v for k, v in life if k == mine]
        await audit.append(
            [Incoming("safety.alerts", 0, 0, encode(a))]
            + [Incoming("safety.alert-lifecycle", 0, n, v) for n, v in enumerate(ours)]
        )
        async with audit.engine.connect() as conn:
            status = (
                await conn.execute(
                    text("SELECT status FROM rm_alerts WHERE alert_id = :a"), {"a": str(a.alert_id)}
                )
            ).scalar_one()
        assert status == "acknowledged"
    finally:
        stop.set()
        await running
        server.should_exit = True
        await served
        await parts.notifier.store.close()
        await audit.close()
