"""`audit project` as a service: the projection, beside it /healthz, /readyz and /metrics, its lag
per topic, how long since it last wrote, and the chain verified on a schedule (a gauge ops alert
on: a trail that stops verifying is found within AUDIT_VERIFY_EVERY_S, not at the next DSMB
meeting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.audit.adapters.store import Appended, AuditStore
from services.audit.anchors import Anchors
from services.audit.domain.chain import key_id
from services.audit.keys import public_hex, signing_key, trusted_keys
from services.audit.projection import PROJECTION_LOCK, LagProbe, project
from services.audit.settings import AuditSettings
from services.audit.verification import verified
from services.sql import exclusive
from services.web import guard, observe_gc_pauses, serve_beside

log = logging.getLogger("audit.watch")
RECHECK_S = 10.0  # after a failed verification, the next one comes this soon


@dataclass
class ProjectionMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.gc_pauses = observe_gc_pauses(r)
        self.requests = Counter(
            "safety_monitor_audit_projection_requests_total",
            "HTTP requests to the projection's endpoints",
            ["route", "status"],
            registry=r,
        )
        self.appended = Counter(
            "safety_monitor_audit_rows_appended_total", "Rows appended to the audit log", registry=r
        )
        self.duplicates = Counter(
            "safety_monitor_audit_duplicates_total",
            "Messages already in the log (redelivery, replay)",
            registry=r,
        )
        self.undecodable = Counter(
            "safety_monitor_audit_undecodable_total",
            "Messages kept aside with the reason they could not be read",
            registry=r,
        )
        self.conflicts = Counter(
            "safety_monitor_audit_conflicts_total",
            "Messages reusing an event_id with other content",
            registry=r,
        )
        self.head = Gauge("safety_monitor_audit_head_seq", "The log's newest row", registry=r)
        self.lag = Gauge(
            "safety_monitor_audit_consumer_lag",
            "Messages on the audited topics not projected yet (end offset minus stored)",
            ["topic"],
            registry=r,
        )
        self.age = Gauge(
            "safety_monitor_audit_last_processed_age_seconds",
            "Seconds since the projection last wrote a batch (grows while idle: read with lag)",
            registry=r,
        )
        self.verified = Gauge(
            "safety_monitor_audit_chain_verified",
            "1 when the last scheduled verification of the chain and its anchors held, else 0",
            registry=r,
        )
        self.verified_at = Gauge(
            "safety_monitor_audit_chain_verified_timestamp_seconds",
            "When the chain was last verified (Unix time)",
            registry=r,
        )
        self.verify_seconds = Gauge(
            "safety_monitor_audit_chain_verify_seconds",
            "How long the last verification took, of the whole chain or its newest segment",
            ["scope"],
            registry=r,
        )
        self.verified_rows = Gauge(
            "safety_monitor_audit_chain_verified_rows",
            "Rows the last verification recomputed, of the whole chain or its newest segment",
            ["scope"],
            registry=r,
        )
        self.ready = Gauge(
            "safety_monitor_audit_projection_ready",
            "1 while the projection runs and its lag could be read lately",
            registry=r,
        )


@dataclass
class Watch:
    """What the endpoints report about the running projection."""

    metrics: ProjectionMetrics
    running: bool = False
    last_write: float = field(default_factory=time.monotonic)
    lag_read_at: float = 0.0

    def batch(self, result: Appended) -> None:
        m = self.metrics
        m.appended.inc(result.rows)
        m.duplicates.inc(result.duplicates)
        m.undecodable.inc(result.undecodable)
        m.conflicts.inc(result.conflicts)
        m.head.set(result.head_seq)
        self.last_write = time.monotonic()

    def is_ready(self) -> bool:
        ok = self.running and time.monotonic() - self.lag_read_at < 30
        self.metrics.ready.set(1 if ok else 0)
        return ok


def create_app(watch: Watch) -> Any:
    from fastapi import FastAPI, Response
    from fastapi.responses import JSONResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    app = FastAPI(title="Audit projection", docs_url=None, redoc_url=None)
    m = watch.metrics
    guard(app, lambda route, status, _: m.requests.labels(route, str(status)).inc(), log)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = watch.is_ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        m.age.set(round(time.monotonic() - watch.last_write, 1))
        watch.is_ready()
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _lag(
    settings: AuditSettings, store: AuditStore, watch: Watch, stop: asyncio.Event
) -> None:
    async with LagProbe(settings.kafka_bootstrap) as probe:
        while not stop.is_set():
            try:
                behind = await probe.behind(store)
                for topic in probe.topics:  # every topic, so one caught up reads 0
                    late = sum(n for k, n in behind.items() if k.rsplit("[", 1)[0] == topic)
                    watch.metrics.lag.labels(topic).set(late)
                watch.lag_read_at = time.monotonic()
            except Exception:  # reported as not ready, and tried again
                log.warning("could not read the projection's lag", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.audit_lag_every_s)


async def _verify(
    settings: AuditSettings, store: AuditStore, watch: Watch, stop: asyncio.Event
) -> None:
    trusted = trusted_keys(settings)
    signer = key_id(signing_key(settings).public_key())
    anchors = Anchors(settings.kafka_bootstrap, settings.audit_anchor_file)
    try:
        whole_at = -float("inf")  # the whole chain at start and daily; the newest segment
        # (from the newest anchored checkpoint) in between
        wait = 0.0  # at start, then on the schedule; soon again after a failure (a fresh
        # trail has no signed checkpoint for its first seconds: that must not page anyone)
        while not stop.is_set():
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    break
            wait = settings.audit_verify_every_s
            started = time.monotonic()
            whole = started - whole_at >= settings.audit_full_verify_every_s
            try:
                verdict = await verified(
                    store, trusted, anchors, newest_only=not whole, signer=signer
                )
                if whole:
                    whole_at = started
            except Exception:
                log.exception("the scheduled verification could not run")
                watch.metrics.verified.set(0)
                wait = min(wait, RECHECK_S)
                continue
            m = watch.metrics
            m.verified.set(1 if verdict.ok else 0)
            m.verified_at.set(time.time())
            m.verify_seconds.labels("whole" if whole else "newest").set(
                round(time.monotonic() - started, 3)
            )
            m.verified_rows.labels("whole" if whole else "newest").set(verdict.rows)
            if not verdict.ok:
                wait = min(wait, RECHECK_S)
                log.error(
                    "the audit chain does not verify",
                    extra={"first_broken_seq": verdict.first_broken_seq, "reason": verdict.reason},
                )
    finally:
        await anchors.close()


async def run(
    settings: AuditSettings, store: AuditStore, key: Ed25519PrivateKey, host: str, port: int
) -> int:
    """The projection until SIGTERM/SIGINT, with its endpoints on host:port."""
    watch = Watch(ProjectionMetrics())

    async def work(stop: asyncio.Event) -> int:
        helpers = [
            asyncio.create_task(_lag(settings, store, watch, stop)),
            asyncio.create_task(_verify(settings, store, watch, stop)),
        ]
        watch.running = True
        try:
            await project(
                settings.kafka_bootstrap,
                store,
                key,
                stop,
                checkpoint_every=settings.audit_checkpoint_every,
                batch_max=settings.audit_batch_max,
                anchors=Anchors(
                    settings.kafka_bootstrap, settings.audit_anchor_file, public_key=public_hex(key)
                ),
                on_batch=watch.batch,
                locked=True,
            )
            return 0
        finally:
            watch.running = False
            stop.set()
            for h in helpers:  # read-only: cut, never waited on (a broker away held 40 s)
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    # the chain's one writer first: a second projection exits (Held) before it binds a port
    async with exclusive(store.engine, PROJECTION_LOCK, wait=False):
        return await serve_beside(create_app(watch), host, port, work, work_without_server=True)
