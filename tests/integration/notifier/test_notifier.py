"""The notifier on the real broker, with a real SMTP server (aiosmtpd) and a real webhook
receiver (an HTTP server in the test): one alert, one email and one signed webhook call, both
recorded as delivered; the link acknowledges it once; an SMTP server down for a while gets the
mail once it is back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request

from contracts import AlertRaised, decode, encode, key_for
from contracts.topics import SAFETY_ALERTS
from services.notifier.bootstrap import build
from services.notifier.domain.tokens import signature
from services.notifier.settings import NotifierSettings, development_secrets
from tests.conftest import free_port
from tests.integration.kafka_io import produce_raw, wait_for
from tests.unit.notifier.test_desk import alert

WEBHOOK_SECRET = "webhook-secret-for-tests-" + "w" * 32
LINK_SECRET = "link-secret-for-tests-" + "l" * 32


@dataclass
class Inbox:
    """What the SMTP server accepted."""

    mails: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@dataclass
class Hooks:
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, Hooks]]:
    hooks, app = Hooks(), FastAPI()

    @app.post("/hook")
    async def receive(request: Request) -> dict[str, bool]:
        hooks.calls.append((dict(request.headers), await request.body()))
        return {"ok": True}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}/hook", hooks
    server.should_exit = True
    await task


def settings_for(
    kafka: str, tmp_path: Path, smtp_port: int, hook_url: str, rule: str = "sae.reported"
) -> NotifierSettings:
    """Routes only `rule`: the topic holds every other test's alerts too, routed nowhere."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "recipients:\n"
        f"  safety-officer: {{email: so@trial.example, webhook: '{hook_url}'}}\n"
        f"routes:\n  - {{match: {{severity: [critical], rule: ['{rule}']}}, to: [safety-officer], "
        "channels: [email, webhook]}\n"
    )
    return NotifierSettings(
        kafka_bootstrap=kafka,
        notifier_routes=routes,
        notifier_database_url=f"sqlite+aiosqlite:///{tmp_path / 'notifier.db'}",
        notifier_public_url="https://monitor.example",
        notifier_smtp_port=smtp_port,
        notifier_webhook_secret=WEBHOOK_SECRET,  # type: ignore[arg-type]
        notifier_link_secret=LINK_SECRET,  # type: ignore[arg-type]
        notifier_tick_s=0.2,
        notifier_retry_max_s=1,
    )


async def until(check: Any, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.1)


def unique_rule() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


def unique_alert(rule: str) -> AlertRaised:
    pid = f"NT-{uuid.uuid4().hex[:6]}-1"
    return alert(rule, "critical", pid=pid)


async def test_one_alert_becomes_one_email_and_one_signed_webhook_and_is_acknowledged_once(
    kafka: str, tmp_path: Path, webhook: tuple[str, Hooks], fresh_database_url: str
) -> None:
    hook_url, hooks = webhook
    inbox, smtp_port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    rule = unique_rule()
    settings = settings_for(kafka, tmp_path, smtp_port, hook_url, rule)
    settings.notifier_database_url = fresh_database_url  # SQLite, then PostgreSQL
    parts = build(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    try:
        due = datetime.now(UTC) + timedelta(days=30)  # a regulatory clock, far from reminders
        a = unique_alert(rule).model_copy(update={"due_by": due})
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(a), encode(a))
        mine = str(a.alert_id)

        def mails() -> list[Message]:
            return [m for m in inbox.mails if a.participant_id in str(m["Subject"])]

        await until(lambda: mails() and any(mine.encode() in body for _, body in hooks.calls))
        # the nearest deadline of an open alert: ours at most (the topic holds others'); NaN
        # (no open alert with a deadline) compares false, so this waits for ours
        nearest = parts.notifier.metrics.next_deadline
        await until(lambda: nearest._value.get() <= 30 * 86400)
        (mail,) = mails()
        assert str(mail["Subject"]).startswith(f"[CRITICAL] {rule}")
        assert mail["To"] == "so@trial.example" and mail["Message-ID"]
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert f"participant {a.participant_id}" in text
        ((headers, body),) = [c for c in hooks.calls if mine.encode() in c[1]]
        assert headers["x-safety-monitor-signature"] == signature(WEBHOOK_SECRET.encode(), body)
        assert headers["idempotency-key"].startswith(f"alert|{mine}")
        assert json.loads(body)["alerts"][0]["alert_id"] == mine

        def delivered(messages: list[tuple[bytes | None, bytes]]) -> bool:
            kinds = [decode(v).event_type for k, v in messages if k == mine.encode()]
            return kinds.count("alert.delivered") == 2

        await wait_for(kafka, "safety.alert-lifecycle", delivered)

        # the link in the email acknowledges it, once
        link = next(w for w in text.split() if w.startswith("https://monitor.example/ack/"))
        path = link.removeprefix("https://monitor.example")
        transport = httpx.ASGITransport(app=parts.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as http:
            page = await http.get(path)
            assert page.status_code == 200 and "Acknowledge as safety-officer" in page.text
            done = await http.post(path)
            assert done.status_code == 200 and "Acknowledged" in done.text
            again = await http.post(path)
            assert "Already acknowledged by safety-officer" in again.text
            forged = await http.post(path[:-3] + "xyz")
            assert forged.status_code == 403
            # ops read how long since it last took in alerts, and how far behind it is
            metrics = (await http.get("/metrics")).text
            ages = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("safety_monitor_notifier_last_processed_age_seconds ")
            ]
            assert len(ages) == 1 and 0 <= ages[0] < 60
            assert "safety_monitor_notifier_next_deadline_seconds " in metrics
            assert 'safety_monitor_notifier_consumer_lag{topic="safety.alerts"}' in metrics

        def acknowledged(messages: list[tuple[bytes | None, bytes]]) -> bool:
            return any(
                k == mine.encode() and decode(v).event_type == "alert.acknowledged"
                for k, v in messages
            )

        life = await wait_for(kafka, "safety.alert-lifecycle", acknowledged)
        acks = [decode(v) for k, v in life if k == mine.encode()]
        acks = [x for x in acks if x.event_type == "alert.acknowledged"]
        assert len({x.event_id for x in acks}) == 1
        assert acks[0].acknowledged_by == "safety-officer"  # type: ignore[union-attr]
    finally:
        stop.set()
        await running
        await parts.notifier.store.close()
        smtp.stop()


async def test_an_smtp_server_down_for_a_while_gets_the_mail_once_when_it_is_back(
    kafka: str, tmp_path: Path, webhook: tuple[str, Hooks]
) -> None:
    hook_url, _ = webhook
    inbox, smtp_port, rule = Inbox(), free_port(), unique_rule()
    parts = build(settings_for(kafka, tmp_path, smtp_port, hook_url, rule))
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    try:
        a = unique_alert(rule)
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(a), encode(a))

        def failed(messages: list[tuple[bytes | None, bytes]]) -> bool:
            return any(
                k == str(a.alert_id).encode() and decode(v).event_type == "alert.delivery_failed"
                for k, v in messages
            )

        await wait_for(kafka, "safety.alert-lifecycle", failed)  # nobody listening yet
        smtp.start()
        await until(lambda: any(a.participant_id in str(m["Subject"]) for m in inbox.mails))
        await asyncio.sleep(3 * parts.settings.notifier_tick_s + 1)  # time for a wrong repeat
        assert sum(a.participant_id in str(m["Subject"]) for m in inbox.mails) == 1
        failures = parts.notifier.metrics.deliveries.labels("email", "failed")._value.get()
        assert failures >= 1
    finally:
        stop.set()
        await running
        await parts.notifier.store.close()
        smtp.stop()


def test_a_wrong_routes_file_stops_the_notifier_at_start_naming_the_line(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    routes = tmp_path / "routes.yaml"
    routes.write_text("recipients:\n  so: {email: so@x.example}\nroutes:\n  - to: [nobody]\n")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "notifier", "serve"],
        env={"SAFETY_MONITOR_NOTIFIER_ROUTES": str(routes), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "line 4: routes.0.to.0: 'nobody' is not in recipients" in done.stderr


@pytest.mark.parametrize(
    ("link", "said"),
    [
        (None, "SAFETY_MONITOR_NOTIFIER_LINK_SECRET is not set"),
        ("change-me-link-secret", "SAFETY_MONITOR_NOTIFIER_LINK_SECRET is too weak"),
    ],
)
def test_the_notifier_refuses_to_start_without_its_own_secrets(
    tmp_path: Path, link: str | None, said: str
) -> None:
    """The old defaults let anyone forge a live-page session or an acknowledgement."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "SAFETY_MONITOR_NOTIFIER_WEBHOOK_SECRET": "w" * 40}
    if link is not None:
        env["SAFETY_MONITOR_NOTIFIER_LINK_SECRET"] = link
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "notifier", "serve"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"notifier: refusing to start: {said}" in done.stderr
    # and a secret read from a file (compose's secrets) is taken
    (tmp_path / "link").write_text("s" * 40 + "\n")
    ok = NotifierSettings(
        notifier_link_secret_file=tmp_path / "link", notifier_webhook_secret="w" * 40
    )  # type: ignore[arg-type]
    assert ok.weak_secrets() == [] and ok.notifier_link_secret.get_secret_value() == "s" * 40


async def test_a_notifier_killed_between_send_and_record_repeats_the_same_message_only(
    kafka: str, tmp_path: Path, webhook: tuple[str, Hooks]
) -> None:
    """SIGKILL after the SMTP server took the mail, before the notifier recorded it: after a
    restart the mail comes once more with the same Message-ID (what README documents), then
    never again; the alert is recorded as delivered."""
    import os
    import signal
    import subprocess
    import sys

    hook_url, _ = webhook
    rule = unique_rule()
    settings = settings_for(kafka, tmp_path, free_port(), hook_url, rule)
    env = {
        **os.environ,
        "SAFETY_MONITOR_KAFKA_BOOTSTRAP": kafka,
        "SAFETY_MONITOR_NOTIFIER_ROUTES": str(settings.notifier_routes),
        "SAFETY_MONITOR_NOTIFIER_DATABASE_URL": settings.notifier_database_url,
        "SAFETY_MONITOR_NOTIFIER_SMTP_PORT": str(settings.notifier_smtp_port),
        "SAFETY_MONITOR_NOTIFIER_PORT": str(free_port()),
        "SAFETY_MONITOR_NOTIFIER_TICK_S": "0.2",
        "SAFETY_MONITOR_NOTIFIER_RETRY_MAX_S": "1",
        **development_secrets(),
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        log = (tmp_path / f"notifier-{len(procs)}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.cli", "notifier", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    class KillOnFirst(Inbox):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            reply = await super().handle_DATA(server, session, envelope)
            if len(self.mails) == 1:
                os.killpg(procs[-1].pid, signal.SIGKILL)  # took it; the sender never hears
            return reply

    inbox = KillOnFirst()
    smtp = Controller(inbox, hostname="127.0.0.1", port=settings.notifier_smtp_port)
    smtp.start()
    try:
        start()
        a = unique_alert(rule)
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(a), encode(a))
        await until(lambda: procs[0].poll() is not None, 90)
        assert procs[0].returncode == -signal.SIGKILL
        start()

        def emails() -> list[Message]:
            return [m for m in inbox.mails if a.participant_id in str(m["Subject"])]

        await until(lambda: len(emails()) >= 2, 90)
        mine = str(a.alert_id).encode()
        await wait_for(
            kafka, "safety.alert-lifecycle",
            lambda m: any(k == mine and b'"alert.delivered"' in v and b'"email"' in v
                          for k, v in m),
        )  # fmt: skip
        await asyncio.sleep(2)  # time for a wrong third copy
        first, second = emails()
        assert len(emails()) == 2
        assert first["Message-ID"] == second["Message-ID"]  # the repeat is recognisable
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
        smtp.stop()


async def test_a_poison_alert_on_the_topic_never_stops_the_notifier(
    kafka: str, tmp_path: Path, webhook: tuple[str, Hooks]
) -> None:
    """Produced straight onto safety.alerts (no ingest in the way): bytes that are no event, and
    an alert whose deadline is in year 1. The notifier tells of both alerts and goes on."""
    from datetime import UTC, datetime

    hook_url, _ = webhook
    inbox, smtp_port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    rule = unique_rule()
    parts = build(settings_for(kafka, tmp_path, smtp_port, hook_url, rule))
    stop = asyncio.Event()
    running = asyncio.create_task(parts.notifier.run(stop))
    try:
        odd = alert(rule, "critical", pid=f"NT-{uuid.uuid4().hex[:6]}-1",
                    due_by=datetime(1, 1, 1, tzinfo=UTC))  # fmt: skip
        good = unique_alert(rule)
        await produce_raw(kafka, SAFETY_ALERTS.name, b"x", b"\xff not an event")
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(odd), encode(odd))
        await produce_raw(kafka, SAFETY_ALERTS.name, key_for(good), encode(good))

        def told(a: AlertRaised) -> bool:
            return any(a.participant_id in str(m["Subject"]) for m in inbox.mails)

        await until(lambda: told(good) and told(odd))
        assert not running.done()
    finally:
        stop.set()
        await running
        await parts.notifier.store.close()
        smtp.stop()
