"""The local demo on embedded defaults: the whole stack as far as it is built.

1. starts the real Kafka broker (KRaft) and creates the catalog's topics;
2. starts the safety rules worker and the ingest API (uvicorn, SQLite) as their own
   processes and waits until both are ready;
3. submits the sample trial through POST /v1/events with an admin key;
4. waits for the worker's alerts on safety.alerts and checks them against the same engine run
   offline (`safety-monitor evaluate`): the stream and the batch must agree;
5. runs the audit projection until it has caught up, verifies the hash chain and writes the
   DSMB report to .local/report.html;
6. with `--once`, stops the services gracefully and leaves the broker running; otherwise starts
   every service again (and Prometheus, if installed) and prints the URLs to open, until SIGINT
   or SIGTERM stops every process it started, the broker too.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller

from contracts import (
    CATALOG,
    AlertRaised,
    AnyEvent,
    InvalidEvent,
    decode,
)
from contracts.topics import AUDIT_CHECKPOINTS
from deploy.kafka.launcher import KafkaLauncher, KafkaSettings
from services.audit.adapters.store import AuditReader, AuditStore
from services.audit.anchors import Anchors
from services.audit.keys import trusted_keys
from services.audit.projection import LagProbe
from services.audit.report import render_report
from services.audit.settings import AuditSettings
from services.bench import free_port
from services.ingest.bootstrap import build as build_ingest
from services.ingest.domain.policy import Role
from services.ingest.settings import IngestSettings
from services.safety_rules.evaluate import run as evaluate_offline
from services.safety_rules.rules_config import load_rules
from services.sample import TRIAL_ID, story

INGEST_PORT = 8001
WORKER_PORT = 8002
NOTIFIER_PORT = 8003


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def read_all(bootstrap: str, topic: str) -> tuple[dict[str, AnyEvent], int, int]:
    """Every message on `topic` from the beginning: the distinct events by event_id, how many
    messages there were, and how many did not decode."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        events: dict[str, AnyEvent] = {}
        messages = bad = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    messages += 1
                    try:
                        event = decode(record.value or b"")
                    except InvalidEvent:
                        bad += 1
                        continue
                    events.setdefault(str(event.event_id), event)
        return events, messages, bad
    finally:
        await consumer.stop()


def _start(name: str, args: list[str], env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    log = (home / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, name: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {name} exited; see .local/{name}.log")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the {name} was not ready in time; see .local/{name}.log")


def admin_key(settings: IngestSettings | None = None) -> str:
    """A new admin API key in the ingest database `settings` name (created if need be)."""
    parts = build_ingest(settings or IngestSettings())

    async def make() -> str:
        await parts.store.create()
        try:
            return (await parts.store.add_key(Role.ADMIN, None))[1]
        finally:
            await parts.store.close()

    return asyncio.run(make())


def _submit(events: list[AnyEvent], key: str) -> Counter[str]:
    """POSTs each participant's events as one batch; returns the outcomes."""
    outcomes: Counter[str] = Counter()
    batches: dict[str, list[dict[str, object]]] = {}
    for e in events:
        body = e.model_dump(mode="json")
        for server_field in ("recorded_at", "recorded_by", "source"):
            body.pop(server_field)
        batches.setdefault(str(getattr(e, "participant_id", "")), []).append(body)
    for batch in batches.values():
        request = urllib.request.Request(
            f"http://127.0.0.1:{INGEST_PORT}/v1/events",
            data=json.dumps(batch).encode(),
            headers={"X-API-Key": key, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            outcomes.update(r["outcome"] for r in json.load(response)["results"])
    return outcomes


async def _wait_alerts(
    bootstrap: str, expected: set[str], timeout_s: float = 90
) -> list[AlertRaised]:
    deadline = time.monotonic() + timeout_s
    while True:
        events, _, _ = await read_all(bootstrap, "safety.alerts")
        alerts = [e for e in events.values() if isinstance(e, AlertRaised)]
        if expected <= {str(a.alert_id) for a in alerts} or time.monotonic() > deadline:
            return alerts
        await asyncio.sleep(1)


def _audit(bootstrap: str, home: Path) -> bool:
    """Runs the audit projection until it has caught up, verifies the chain against its anchors,
    writes the report; whether the trail verified."""
    projection = _start(
        "audit-projection",
        ["audit", "project"],
        {"SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap},
        home,
    )
    settings = AuditSettings()
    store = AuditStore(settings.audit_database_url)

    async def caught_up(timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        async with LagProbe(bootstrap) as probe:
            while time.monotonic() < deadline:
                try:
                    if await probe.lag(store) == 0:
                        return
                except Exception:  # the projection has not created its tables yet
                    pass
                await asyncio.sleep(0.3)
        raise RuntimeError("the audit projection did not catch up; see .local/audit-projection.log")

    async def finish() -> tuple[int, Any, str]:
        try:
            await caught_up()
        finally:
            os.kill(projection.pid, signal.SIGTERM)  # it signs and anchors its head on the way out
            projection.wait(60)
        try:
            trusted = trusted_keys(settings)
            anchors = Anchors(bootstrap, settings.audit_anchor_file)
            verdict = await store.verify(trusted, await anchors.read(trusted))
            page = await render_report(AuditReader(store), trial_id=TRIAL_ID)
            return await store.count(), verdict, page
        finally:
            await store.close()

    rows, verdict, page = asyncio.run(finish())
    (home / "report.html").write_text(page)
    state = "verified" if verdict.ok else f"BROKEN at row {verdict.first_broken_seq}"
    print(
        f"[demo] audit trail: {rows} rows, hash chain {state} "
        f"({verdict.checkpoints} signed checkpoints, the newest anchored on "
        f"{AUDIT_CHECKPOINTS.name} at row {verdict.anchored_seq}); DSMB report: "
        f"{home / 'report.html'}"
    )
    return bool(verdict.ok)


DEMO_ROUTES = """\
recipients:
  safety-officer: {email: safety.officer@trial.example}
  medical-monitor: {email: medical.monitor@trial.example}
routes:
  - {to: [safety-officer], channels: [email]}
  - {match: {rule: [trial.stopping_rule]}, to: [medical-monitor], channels: [email]}
escalation:
  - {after_minutes: 30, to: medical-monitor}
group_window_seconds: 5
"""


class SmtpSink:
    """A local SMTP server that takes every mail and prints its recipient and subject."""

    def __init__(self) -> None:
        self.alert_ids: set[str] = set()
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        key = str(mail.get("X-Safety-Monitor-Key", "")).strip()  # a long header is folded
        if key.startswith("alert|"):
            self.alert_ids |= set(key.split("|")[1].split("+"))
        self.count += 1
        subject = str(mail["Subject"]).strip()
        print(f"[demo]   email to {', '.join(envelope.rcpt_tos)}: {subject}", flush=True)
        return "250 OK"


def _told(sink: SmtpSink, home: Path) -> set[str]:
    """Alerts emailed in this run, or delivered by the notifier in an earlier one."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{home / 'notifier.db'}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT alert_id FROM notifier_alerts WHERE first_delivered_at IS NOT NULL"
            ).fetchall()
    except sqlite3.Error:
        rows = []
    return sink.alert_ids | {r[0] for r in rows}


TICK = "SAFETY_MONITOR_RULES_TICK_SECONDS"


def _print_new(alerts: list[AlertRaised], ids: set[str]) -> None:
    for a in sorted(
        (a for a in alerts if str(a.alert_id) in ids),
        key=lambda a: (a.participant_id or "", a.rule_id),
    ):
        print(
            f"[demo]   {a.participant_id or 'trial':8} {a.severity.value:8} "
            f"{a.rule_id:20} {a.title}",
            flush=True,
        )


def run(settings: KafkaSettings, once: bool = True) -> int:
    """The demo; with `once` it exits when done (CI), otherwise it keeps the whole stack serving
    and prints where to look until Ctrl-C, which stops every process it started."""
    launcher = KafkaLauncher(settings)
    status = launcher.up()
    print(f"[demo] {status}")
    home = Path.cwd() / ".local"
    if status.fresh:
        # A new, empty log: the ingest database's record of what was accepted describes a log
        # that is gone, and would answer "duplicate" for events this log never saw.
        (home / "ingest.db").unlink(missing_ok=True)
        (home / "audit.db").unlink(missing_ok=True)
        shutil.rmtree(home / "safety-rules", ignore_errors=True)  # the worker's state and offsets
        (home / "notifier.db").unlink(missing_ok=True)
        print("[demo] new broker storage: the demo's databases start afresh too")
    env = {"SAFETY_MONITOR_KAFKA_BOOTSTRAP": status.bootstrap}
    worker_env = {**env, "SAFETY_MONITOR_RULES_WEB_PORT": str(WORKER_PORT)}
    # no tick while the story is told (a tick between chapters would find visits "missed"
    # that the next chapter brings); the worker is restarted with a short tick after it
    worker = _start("rules-worker", ["rules", "worker"], {**worker_env, TICK: "3600"}, home)
    ingest = _start("ingest", ["ingest", "serve", "--port", str(INGEST_PORT)], env, home)
    sink, smtp_port, officer = SmtpSink(), free_port(), secrets.token_urlsafe(12)
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    (home / "demo-routes.yaml").write_text(DEMO_ROUTES)
    notifier = _start(
        "notifier",
        ["notifier", "serve", "--port", str(NOTIFIER_PORT)],
        {**env, **_notifier_env(home, smtp_port, officer)},
        home,
    )
    missing: set[str] = set()
    try:
        _wait_ready(notifier, f"http://127.0.0.1:{NOTIFIER_PORT}/readyz", "notifier")
        print(
            f"[demo] notifier ready: live page http://127.0.0.1:{NOTIFIER_PORT}/ "
            f"(token {officer}); mail goes to a local SMTP sink on port {smtp_port}"
        )
        _wait_ready(worker, f"http://127.0.0.1:{WORKER_PORT}/readyz", "rules-worker")
        _wait_ready(ingest, f"http://127.0.0.1:{INGEST_PORT}/readyz", "ingest")
        print(f"[demo] rules worker ready: http://127.0.0.1:{WORKER_PORT}/metrics")
        print(f"[demo] ingest ready: http://127.0.0.1:{INGEST_PORT}/docs")
        key, rules = admin_key(), load_rules()
        chapters = story()
        trial = [e for c in chapters for e in c.events]
        started, outcomes, shown = time.monotonic(), Counter[str](), set[str]()
        so_far: list[AnyEvent] = []
        for chapter in chapters:
            print(f"[demo] -- {chapter.title}: {chapter.watch}", flush=True)
            so_far += chapter.events
            outcomes += _submit(chapter.events, key)
            # the event rules now; the clock's (visit.overdue) once the story is told
            now = {
                str(a.alert_id)
                for a in evaluate_offline(so_far, rules, as_of=None)  # type: ignore[arg-type]
                if a.rule_id != "visit.overdue"
            }
            alerts = asyncio.run(_wait_alerts(status.bootstrap, now))
            _print_new(alerts, now - shown)
            shown |= now
        print(
            f"[demo] POST /v1/events, the story: {dict(outcomes)} "
            "(run it again: the same event_ids, so all duplicates)"
        )
        print("[demo] -- today: the worker's clock runs the time-based rules", flush=True)
        os.killpg(worker.pid, signal.SIGTERM)  # it ticked hourly during the story: restarted
        worker.wait(60)
        worker = _start("rules-worker", ["rules", "worker"], {**worker_env, TICK: "2"}, home)
        offline = evaluate_offline(trial, rules, as_of=datetime.now(UTC))  # type: ignore[arg-type]
        expected = {str(a.alert_id) for a in offline}
        alerts = asyncio.run(_wait_alerts(status.bootstrap, expected))
        _print_new(alerts, expected - shown)
        mine = [a for a in alerts if a.trial_id == trial[0].trial_id]
        fired = {a.rule_id for a in mine}
        print(
            f"[demo] {len(mine)} distinct alerts on safety.alerts "
            f"{time.monotonic() - started:.1f}s after the first POST, "
            f"{len(fired)} of the {len(rules.enabled_rules)} rules"
        )
        missing = expected - {str(a.alert_id) for a in mine}
        verdict = "agree" if not missing else f"{len(missing)} alerts missing"
        print(
            f"[demo] stream vs `safety-monitor evaluate` (every rule, visit.overdue too): {verdict}"
        )
        deadline = time.monotonic() + 60
        while not expected <= _told(sink, home) and time.monotonic() < deadline:
            time.sleep(0.2)
        unsent = expected - _told(sink, home)
        missing |= unsent
        print(
            f"[demo] {sink.count} emails in this run; every alert told (now or in an earlier "
            "run: a replayed alert is never sent twice): "
            + ("yes" if not unsent else f"no, {len(unsent)} not emailed")
        )
        verified = _audit(status.bootstrap, home)
    finally:
        for proc in (notifier, ingest, worker):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        if once or sys.exc_info()[0] is not None:  # a failed story serves nothing: all stop
            smtp.stop()
    for topic in CATALOG:
        if topic is AUDIT_CHECKPOINTS:
            continue  # not events: the anchors of the audit chain (printed above)
        events, messages, bad = asyncio.run(read_all(status.bootstrap, topic.name))
        counts = Counter(e.event_type for e in events.values())
        summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "empty"
        print(
            f"[demo] {topic.name}: {messages} messages, {len(events)} distinct ({summary}); "
            f"undecodable {bad}"
        )
    code = 0 if not missing and verified else 1
    if once:
        print("[demo] the broker keeps running; stop it with: .venv/bin/safety-monitor kafka down")
        return code
    explore(status.bootstrap, home, officer, smtp_port, sink)
    launcher.down()
    print("[demo] stopped: every process the demo started, and the broker")
    return code


AUDIT_PORT = 8004
PROJECTION_PORT = 8005
PROMETHEUS_PORT = 9090


def explore(bootstrap: str, home: Path, officer: str, smtp_port: int, sink: SmtpSink) -> None:
    """Every service up again, serving, with the URLs to open, until SIGINT or SIGTERM; then
    each process is stopped (SIGTERM, waited for) and the SMTP sink closed."""
    env = {"SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap}
    stopping: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda n, _: stopping.append(n))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    token = _dsmb_token()
    started: list[tuple[str, subprocess.Popen[bytes], str]] = [  # (name, process, readiness)
        ("rules-worker", _start("rules-worker", ["rules", "worker"],
                                {**env, "SAFETY_MONITOR_RULES_TICK_SECONDS": "5",
                                 "SAFETY_MONITOR_RULES_WEB_PORT": str(WORKER_PORT)}, home),
         f"{WORKER_PORT}/readyz"),
        ("ingest", _start("ingest", ["ingest", "serve", "--port", str(INGEST_PORT)], env, home),
         f"{INGEST_PORT}/readyz"),
        ("notifier", _start("notifier", ["notifier", "serve", "--port", str(NOTIFIER_PORT)],
                            {**env, **_notifier_env(home, smtp_port, officer)}, home),
         f"{NOTIFIER_PORT}/readyz"),
        ("audit-projection", _start("audit-projection",
                                    ["audit", "project", "--port", str(PROJECTION_PORT)], env,
                                    home),
         f"{PROJECTION_PORT}/healthz"),
        ("audit-api", _start("audit-api", ["audit", "serve", "--port", str(AUDIT_PORT)], env,
                             home),
         f"{AUDIT_PORT}/healthz"),
    ]  # fmt: skip
    prometheus = _prometheus(home)
    if prometheus is not None:
        started.append(("prometheus", prometheus, f"{PROMETHEUS_PORT}/-/ready"))
    procs = [proc for _, proc, _ in started]
    try:
        for name, proc, ready in started:
            _wait_ready(proc, f"http://127.0.0.1:{ready}", name)
        base = "http://127.0.0.1"
        lines = [
            f"ingest API (try POST /v1/events):  {base}:{INGEST_PORT}/docs",
            f"live alert page (token {officer}):  {base}:{NOTIFIER_PORT}/",
            f"DSMB API (Authorization: Bearer {token}):  {base}:{AUDIT_PORT}/docs",
            f"DSMB report (same token):  {base}:{AUDIT_PORT}/report   file: {home / 'report.html'}",
            *(f"metrics:  {base}:{p}/metrics" for p in
              (INGEST_PORT, WORKER_PORT, NOTIFIER_PORT, AUDIT_PORT, PROJECTION_PORT)),
            f"emails: to the local SMTP sink on port {smtp_port}, printed here as they come",
        ]  # fmt: skip
        if prometheus is not None:
            lines.append(
                f"Prometheus (Debian's, its API):  {base}:{PROMETHEUS_PORT}/api/v1/targets   "
                f"{base}:{PROMETHEUS_PORT}/api/v1/rules"
            )
        else:
            lines.append("Prometheus: not installed (Debian: apt-get install prometheus)")
        print("[demo] serving; open:", *(f"[demo]   {x}" for x in lines), sep="\n", flush=True)
        print("[demo] Ctrl-C stops everything", flush=True)
        while not stopping:
            for name, proc, _ in started:
                if proc.poll() is not None:
                    print(f"[demo] {name} exited; see {home / name}.log", flush=True)
                    stopping.append(0)
            time.sleep(0.2)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"[demo] {sink.count} emails in all", flush=True)


def _notifier_env(home: Path, smtp_port: int, officer: str) -> dict[str, str]:
    return {
        **_notifier_secrets(home),
        "SAFETY_MONITOR_NOTIFIER_ROUTES": str(home / "demo-routes.yaml"),
        "SAFETY_MONITOR_NOTIFIER_SMTP_PORT": str(smtp_port),
        "SAFETY_MONITOR_NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'notifier.db'}",
        "SAFETY_MONITOR_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{NOTIFIER_PORT}",
        "SAFETY_MONITOR_NOTIFIER_API_TOKENS": f"safety-officer:{officer}",
    }


def _notifier_secrets(home: Path) -> dict[str, str]:
    """The demo's own random link and webhook secrets, kept in its home (0600) so that links
    it emailed still work when it is run again; never a default anyone could know."""
    from services.notifier.settings import development_secrets

    path = home / "notifier-secrets.json"
    if not path.exists():
        path.touch(0o600)
        path.write_text(json.dumps(development_secrets()))
    found: dict[str, str] = json.loads(path.read_text())
    return found


def _dsmb_token() -> str:
    from services.audit.adapters.store import TokenStore

    async def make() -> str:
        store = AuditStore(AuditSettings().audit_database_url)
        try:
            await store.migrate()
            return (await TokenStore(store).add("demo"))[1]
        finally:
            await store.close()

    return asyncio.run(make())


def _prometheus(home: Path) -> subprocess.Popen[bytes] | None:
    """Debian's prometheus on the one-machine config, when installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    import yaml

    deploy = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
    config = yaml.safe_load((deploy / "prometheus.local.yml").read_text())
    config["rule_files"] = [str(deploy / "rules" / "safety-monitor.yml")]
    where = home / "prometheus"
    where.mkdir(parents=True, exist_ok=True)
    (where / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (home / "prometheus.log").open("ab") as log:
        return subprocess.Popen(
            [binary, f"--config.file={where / 'prometheus.yml'}",
             f"--storage.tsdb.path={where / 'data'}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
