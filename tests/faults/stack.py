"""The whole stack through a fault (issue 28, item 5): ingest, the rules worker, the notifier
and the audit projection as real processes on a broker of the run's own, sites posting a
workload through HTTP and retrying every non-2xx with the same body, and one fault while they
post:

- `broker-20s`, `broker-70s`, `broker-10min`: the broker stopped that long and started again
  (past every client's request timeout; 10 minutes is aiokafka's idempotent producer's
  `OutOfOrderSequenceNumber` ground);
- `lock-ingest`, `lock-rules`, `lock-notifier`, `lock-audit`: that service's SQLite database
  held under an exclusive write lock for LOCK_S (10 s); `lock-all`: the four at once.

The harness is the services' supervisor, as systemd's `Restart=always` is: a process that exits
is started again (each exit counted, with its code). After the fault a probe, one serious AE
of a new participant, is posted: `recovery_s` is the seconds from the fault's end until its
email is accepted by the SMTP server. The run then waits until every expected alert was
emailed and the trail caught up, stops every service with SIGTERM, and checks:

- every event the sites posted is on `trial.events` exactly once, with one set of bytes
  (`stored_twice` counts the others);
- the alerts on `safety.alerts` are the ground truth `evaluate` (its own `run_all`) gives for
  the events on the topic, byte for byte (`lost`, `unexpected`, `differing`);
- every expected alert was emailed (`unmailed`), and no Message-ID came twice (`repeated`);
- `audit verify --against-log` passes on the trail the projection wrote (`verified`);
- nothing waited past the settle deadline (`stalled` names what did).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from contracts import AlertRaised, decode
from services.notifier.settings import development_secrets
from services.safety_rules.evaluate import run_all
from services.safety_rules.rules_config import load_rules
from tests.conftest import free_port, launcher_in
from tests.faults.workload import TIME_BASED, truth, workload
from tests.integration.kafka_io import read_topic
from tests.unit.safety_rules.builders import a_participant

STACK_SCENARIOS = {
    "broker-20s": ("broker", 20.0),
    "broker-70s": ("broker", 70.0),
    "broker-10min": ("broker", 600.0),
    "lock-ingest": ("lock", "ingest"),
    "lock-rules": ("lock", "rules"),
    "lock-notifier": ("lock", "notifier"),
    "lock-audit": ("lock", "audit"),
    "lock-all": ("lock", "all"),  # every store at once, one run (CI's short version)
}
LOCK_S = float(os.environ.get("FAULT_LOCK_S", "10"))
SERVER_FIELDS = ("recorded_at", "recorded_by", "source")
ROUTES = """\
recipients:
  safety-officer: {email: safety.officer@trial.example}
routes:
  - {to: [safety-officer], channels: [email]}
group_window_seconds: 0
"""


@dataclass
class StackResult:
    scenario: str
    seed: int
    events: int  # posted by the sites (the probe's included)
    on_topic: int  # distinct event ids on trial.events
    stored_twice: int  # event ids on the topic more than once with other bytes, or missing
    expected: int  # alerts evaluate gives for the topic's events
    lost: int
    unexpected: int
    differing: int
    unmailed: int  # expected alerts with no email
    repeated: int  # Message-IDs received more than once
    verified: bool
    stalled: str  # what had not finished by the deadline ("" if all)
    recovery_s: float | None  # fault's end -> the probe's email accepted
    exits: list[str] = field(default_factory=list)  # "service: code" per exit during the run
    producer_restarts: float = 0  # the worker's wedged producers replaced (its /metrics)
    responses: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    seconds: float = 0.0
    note: str = ""

    @property
    def passed(self) -> bool:
        return (
            not (self.stored_twice or self.lost or self.unexpected or self.differing)
            and not (self.unmailed or self.repeated or self.stalled)
            and self.verified
            and self.recovery_s is not None
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


class Inbox:
    """The SMTP server's side: each mail's Message-ID and the alert ids it tells of."""

    def __init__(self) -> None:
        self.message_ids: Counter[str] = Counter()
        self.alert_ids: dict[str, float] = {}  # alert id -> when first emailed (monotonic)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        self.message_ids[str(mail["Message-ID"]).strip()] += 1
        key = str(mail.get("X-Safety-Monitor-Key", "")).strip()
        if key.startswith("alert|"):
            for a in key.split("|")[1].split("+"):
                self.alert_ids.setdefault(a, time.monotonic())
        return "250 OK"


class Stack:
    """The four services as processes, supervised: an exited one is restarted after a second."""

    SERVICES = {
        "ingest": ["ingest", "serve"],
        "rules": ["rules", "worker"],
        "notifier": ["notifier", "serve"],
        "audit": ["audit", "project"],
    }

    def __init__(self, home: Path, bootstrap: str, smtp_port: int) -> None:
        self.home = home
        self.ingest_port, self.notifier_port = free_port(), free_port()
        self.rules_port = free_port()
        (home / "routes.yaml").write_text(ROUTES)
        self.db = {
            "ingest": home / "ingest.db",
            "rules": home / "rules" / "rules.db",
            "notifier": home / "notifier.db",
            "audit": home / "audit.db",
        }
        self.env = {
            **os.environ,
            **development_secrets(),
            "SAFETY_MONITOR_KAFKA_BOOTSTRAP": bootstrap,
            "SAFETY_MONITOR_INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{self.db['ingest']}",
            "SAFETY_MONITOR_INGEST_PORT": str(self.ingest_port),
            "SAFETY_MONITOR_INGEST_RECONCILE_S": "5",
            "SAFETY_MONITOR_RULES_DATA_DIR": str(home / "rules"),
            "SAFETY_MONITOR_RULES_INSTANCE_ID": "rules-0",
            "SAFETY_MONITOR_RULES_TICK_SECONDS": "3600",
            "SAFETY_MONITOR_RULES_WEB_PORT": str(self.rules_port),
            "SAFETY_MONITOR_RULES_SESSION_TIMEOUT_S": "6",
            "SAFETY_MONITOR_NOTIFIER_ROUTES": str(home / "routes.yaml"),
            "SAFETY_MONITOR_NOTIFIER_DATABASE_URL": f"sqlite+aiosqlite:///{self.db['notifier']}",
            "SAFETY_MONITOR_NOTIFIER_PORT": str(self.notifier_port),
            "SAFETY_MONITOR_NOTIFIER_SMTP_PORT": str(smtp_port),
            "SAFETY_MONITOR_NOTIFIER_TICK_S": "0.2",
            "SAFETY_MONITOR_NOTIFIER_RETRY_MAX_S": "2",
            "SAFETY_MONITOR_AUDIT_DATABASE_URL": f"sqlite+aiosqlite:///{self.db['audit']}",
            "SAFETY_MONITOR_AUDIT_SIGNING_KEY_FILE": str(home / "audit-signing.key"),
            "SAFETY_MONITOR_AUDIT_ANCHOR_FILE": str(home / "anchors.jsonl"),
            "SAFETY_MONITOR_AUDIT_PROJECTION_PORT": str(free_port()),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exits: list[str] = []
        self._watch: asyncio.Task[None] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def _start(self, name: str) -> None:
        log = (self.home / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *self.SERVICES[name]],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    async def start(self) -> str:
        """Every service up; returns an admin API key of ingest."""
        out = await asyncio.to_thread(self.cli, "ingest", "keys", "--role", "admin")
        key = out.stdout.split("secret: ", 1)[1].split()[0]
        for name in self.SERVICES:
            self._start(name)
        async with httpx.AsyncClient(timeout=2) as http:
            for port in (self.ingest_port, self.notifier_port):
                await _until(lambda p=port: _ok(http, f"http://127.0.0.1:{p}/readyz"), 90)
        self._watch = asyncio.create_task(self._supervise())
        return key

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    self.exits.append(f"{name}: {proc.returncode}")
                    await asyncio.sleep(1)
                    self._start(name)

    async def stop(self) -> list[str]:
        """SIGTERM to each; the ones that took over 30 s to go, or exited non-zero."""
        if self._watch is not None:
            self._watch.cancel()
        bad = []
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                code = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                bad.append(f"{name}: ignored SIGTERM")
                continue
            if code not in (0, -signal.SIGTERM):
                bad.append(f"{name}: exited {code} on SIGTERM")
        return bad


async def _ok(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _metric(url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            text = (await http.get(url)).text
        except httpx.HTTPError:
            return -1.0
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " "))


async def _until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.3)
    return False


class Sites:
    """Clients posting batches and retrying every non-2xx (and every broken connection) with
    the very same body, as a site's EDC would: with backoff, until a 2xx."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=30, headers={"X-API-Key": key})
        self.responses: Counter[str] = Counter()

    async def post(self, batch: list[dict[str, Any]]) -> None:
        body, wait = json.dumps(batch), 0.2
        while True:
            try:
                r = await self.http.post(
                    "/v1/events", content=body, headers={"content-type": "application/json"}
                )
                self.responses[str(r.status_code)] += 1
                if r.status_code < 300:
                    return
                if r.status_code not in (408, 409, 429, 500, 502, 503, 504):
                    raise AssertionError(f"{r.status_code} {r.text[:500]}")
            except httpx.HTTPError as e:
                self.responses[type(e).__name__] += 1
            await asyncio.sleep(wait)
            wait = min(wait * 2, 4.0)


def bodies(events: list[Any]) -> list[list[dict[str, Any]]]:
    """One batch per participant, in the order their events happened."""
    batches: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        body = e.model_dump(mode="json")
        for server_field in SERVER_FIELDS:
            body.pop(server_field)
        batches.setdefault(str(e.participant_id), []).append(body)
    return list(batches.values())


def probe(tag: str) -> tuple[list[dict[str, Any]], str]:
    """One serious AE of a new participant, and the id of the `sae.reported` alert it raises."""
    p = a_participant(f"{tag}-PROBE")
    p.enrolled().dosed().ae(day=3, serious=True, ctcae_grade=4, relatedness="probable")
    for a in run_all(p.events(), load_rules(None), None):
        if isinstance(a, AlertRaised) and a.rule_id == "sae.reported":
            return bodies(p.events())[0], str(a.alert_id)
    raise AssertionError("the probe raises no sae.reported")


async def _hold_lock(db: Path, seconds: float) -> None:
    def hold() -> None:
        conn = sqlite3.connect(db, timeout=60, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    await asyncio.to_thread(hold)


async def run_stack_once(
    scenario: str,
    workdir: Path,
    *,
    participants: int,
    seed: int,
    post_s: float = 30.0,
    settle_s: float = 180.0,
) -> StackResult:
    started = time.monotonic()
    kind, arg = STACK_SCENARIOS[scenario]
    tag = f"S{uuid.uuid4().hex[:6].upper()}"
    home = workdir / tag
    home.mkdir(parents=True)
    launcher = launcher_in(home / "kafka")
    await asyncio.to_thread(launcher.up)
    inbox, smtp_port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    stack = Stack(home, launcher.bootstrap, smtp_port)
    events = workload(tag, participants, seed)
    batches = bodies(events)
    probe_batch, sae = probe(tag)
    rnd = random.Random(seed)
    sites: Sites | None = None
    stalled, note, recovery = "", "", None
    try:
        key = await stack.start()
        sites = Sites(f"http://127.0.0.1:{stack.ingest_port}", key)

        async def post_all() -> None:
            # eight sites, each a share of the participants, spread over post_s
            async def site(share: list[list[dict[str, Any]]]) -> None:
                for batch in share:
                    await sites.post(batch)  # type: ignore[union-attr]
                    await asyncio.sleep(post_s / max(1, len(share)))

            await asyncio.gather(*(site(batches[n::8]) for n in range(8)))

        posting = asyncio.create_task(post_all())
        await asyncio.sleep(post_s * rnd.uniform(0.2, 0.4))
        if kind == "broker":
            await asyncio.to_thread(launcher.down)
            await asyncio.sleep(float(arg))
            await asyncio.to_thread(launcher.up, create_topics=False)
        else:
            stores = list(stack.db) if arg == "all" else [str(arg)]
            await asyncio.gather(*(_hold_lock(stack.db[store], LOCK_S) for store in stores))
        fault_over = time.monotonic()
        await sites.post(probe_batch)
        deadline = time.monotonic() + settle_s + (float(arg) if kind == "broker" else 0)
        while sae not in inbox.alert_ids and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if sae in inbox.alert_ids:
            recovery = round(inbox.alert_ids[sae] - fault_over, 1)
        await asyncio.wait_for(posting, max(1.0, deadline - time.monotonic()))

        # settled: every expected alert emailed, the trail caught up
        topic_events = await _events_on_topic(launcher.bootstrap)
        all_events = [decode(raw) for versions in topic_events.values() for raw in versions[:1]]
        expected = truth(all_events)
        if not await _until(
            lambda: _settled(expected, inbox), max(1.0, deadline - time.monotonic())
        ):
            stalled = f"emails: {len(set(expected) - set(inbox.alert_ids))} alerts not emailed"
        if not await _until(lambda: _audit_caught_up(stack), 120):
            stalled += " audit: behind"
        restarts = await _metric(
            f"http://127.0.0.1:{stack.rules_port}/metrics",
            "safety_monitor_rules_producer_restarts_total",
        )
        stop_faults = await stack.stop()
        if stop_faults:
            note += "; ".join(stop_faults)
        verdict = await asyncio.to_thread(stack.cli, "audit", "verify", "--against-log")
        verified = verdict.returncode == 0
        if not verified:
            note += f" verify: {verdict.stdout[-400:]} {verdict.stderr[-400:]}"

        seen: dict[str, set[bytes]] = {}
        for _, raw in await read_topic(launcher.bootstrap, "safety.alerts"):
            alert = decode(raw)
            if isinstance(alert, AlertRaised) and alert.rule_id not in TIME_BASED:
                seen.setdefault(str(alert.alert_id), set()).add(raw)
        differing = sum(
            1
            for a, v in seen.items()
            if len(v) > 1 or (expected.get(a) is not None and v != {expected[a]})
        )
        posted_ids = {b["event_id"] for batch in [*batches, probe_batch] for b in batch}
        stored_twice = sum(1 for v in topic_events.values() if len(set(v)) > 1) + len(
            posted_ids - set(topic_events)
        )
        return StackResult(
            scenario=scenario,
            seed=seed,
            events=len(posted_ids),
            on_topic=len(topic_events),
            stored_twice=stored_twice,
            expected=len(expected),
            lost=len(set(expected) - set(seen)),
            unexpected=len(set(seen) - set(expected)),
            differing=differing,
            unmailed=len(set(expected) - set(inbox.alert_ids)),
            repeated=sum(1 for n in inbox.message_ids.values() if n > 1),
            verified=verified,
            stalled=stalled.strip(),
            recovery_s=recovery,
            exits=stack.exits,
            producer_restarts=restarts,
            responses=dict(sites.responses),
            seconds=round(time.monotonic() - started, 1),
            note=note.strip(),
        )
    finally:
        await stack.stop()
        if sites is not None:
            await sites.http.aclose()
        smtp.stop()
        await asyncio.to_thread(launcher.down, purge=True)


async def _events_on_topic(bootstrap: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for _, raw in await read_topic(bootstrap, "trial.events"):
        out.setdefault(str(decode(raw).event_id), []).append(raw)
    return out


async def _settled(expected: dict[str, bytes | None], inbox: Inbox) -> bool:
    return set(expected) <= set(inbox.alert_ids)


async def _audit_caught_up(stack: Stack) -> bool:
    from services.audit.adapters.store import AuditStore
    from services.audit.projection import LagProbe

    store = AuditStore(stack.env["SAFETY_MONITOR_AUDIT_DATABASE_URL"])
    try:
        async with LagProbe(stack.env["SAFETY_MONITOR_KAFKA_BOOTSTRAP"]) as p:
            return await p.lag(store) == 0
    except Exception:
        return False
    finally:
        await store.close()


def stack_table(results: list[StackResult]) -> str:
    head = (
        f"{'scenario':<14} {'runs':>4} {'passed':>6} {'lost':>4} {'twice':>5} {'differ':>6} "
        f"{'unmailed':>8} {'repeated':>8} {'stalled':>7} {'verify':>6} {'exits':>5} "
        f"{'recovery s (median, max)':>24}"
    )
    lines = [head]
    for scenario in STACK_SCENARIOS:
        rs = [r for r in results if r.scenario == scenario]
        if not rs:
            continue
        rec = sorted(r.recovery_s if r.recovery_s is not None else float("inf") for r in rs)
        lines.append(
            f"{scenario:<14} {len(rs):>4} {sum(r.passed for r in rs):>6} "
            f"{sum(r.lost for r in rs):>4} {sum(r.stored_twice for r in rs):>5} "
            f"{sum(r.differing for r in rs):>6} {sum(r.unmailed for r in rs):>8} "
            f"{sum(r.repeated for r in rs):>8} {sum(bool(r.stalled) for r in rs):>7} "
            f"{sum(r.verified for r in rs):>6} {sum(len(r.exits) for r in rs):>5} "
            f"{rec[len(rec) // 2]:>11.1f} {rec[-1]:>11.1f}"
        )
    return "\n".join(lines)
