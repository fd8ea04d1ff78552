"""The faust worker: decode, call the pure engine, produce. No rule logic lives here.

Topics: trial.events in; safety.alerts, safety.alert-lifecycle (alert.withdrawn, when a correction
removes an alert's evidence) and trial.dead-letter out. State lives in faust tables
backed by changelog topics, so a restarted worker resumes where it was. Agents run with
concurrency 1 (faust issue #606: with more, offsets can be committed past messages still in
flight) and the worker scales by partitions. Correctness does not rest on faust's exactly-once:
alert ids are deterministic, the engine drops events it has seen, and every consumer downstream
is idempotent by alert_id / event_id.

Time-based rules need a table write outside any stream, which faust refuses, so a timer sends a
tick per known participant to an internal ticks topic (co-partitioned with trial.events: same
key, same partition count) and the tick agent evaluates them in stream context.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts import (
    AlertRaised,
    AlertWithdrawn,
    ClinicalEvent,
    InvalidEvent,
    decode,
    encode,
    key_for,
)
from contracts.events import FieldError
from contracts.topics import ALERT_LIFECYCLE, DEAD_LETTER, SAFETY_ALERTS, TRIAL_EVENTS, Topic
from services.logs import dict_config
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.engine import evaluate, evaluate_trial, tick
from services.safety_rules.domain.state import ParticipantState
from services.safety_rules.domain.trial import TrialSignal, TrialState
from services.safety_rules.metrics import RulesMetrics
from services.safety_rules.settings import RulesSettings

log = logging.getLogger("safety_rules.worker")
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int, offset: int) -> bytes:
    """What goes to trial.dead-letter: the reason, where it came from, the original bytes."""
    return json.dumps(
        {
            "reason": reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "original": (raw or b"").decode("utf-8", errors="replace"),
        }
    ).encode()


def clinical(raw: bytes | None) -> ClinicalEvent:
    """The clinical event in `raw`, or InvalidEvent (an alert on trial.events is invalid too)."""
    event = decode(raw or b"")
    if event.event_type not in TRIAL_EVENTS.event_types:
        raise InvalidEvent(
            [FieldError("event_type", f"{event.event_type} does not belong on trial.events")]
        )
    return event  # type: ignore[return-value]


def internal_topics(settings: RulesSettings) -> tuple[Topic, ...]:
    """The worker's own topics (ticks, trial signals, table changelogs), named as faust names
    them. They are created before the worker subscribes: when faust declares them itself, the
    first rebalance of a new app id can run before they exist, and the assignor then ignores
    them ("Ignoring missing topic") until the next rebalance: ticks and the stopping rule stall.
    """
    app, n = settings.rules_app_id, settings.partitions
    compact = {"cleanup.policy": "compact"}
    return (
        Topic(f"{app}-ticks", "time ticks per participant", "participant_id", (), n),
        Topic(f"{app}-trial-signals", "AE signals for the stopping rule", "trial_id", (), 1),
        Topic(f"{app}-participants-changelog", "participant state", "participant_id", (), n,
              compact),
        Topic(f"{app}-trials-changelog", "trial state", "trial_id", (), 1, compact),
    )  # fmt: skip


@dataclass
class RulesApp:
    """The faust app and the parts tests reach for: its topics, tables and agents."""

    app: faust.App
    topics: dict[str, faust.TopicT]
    tables: dict[str, faust.types.TableT[Any, Any]]
    agents: dict[str, faust.types.AgentT[Any]]


def build_app(settings: RulesSettings, cfg: RulesConfig, metrics: RulesMetrics) -> RulesApp:
    app = faust.App(
        settings.rules_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # rebuilt from the changelog topics at start
        datadir=str(settings.rules_data_dir),
        topic_replication_factor=1,
        table_standby_replicas=0,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        web_enabled=settings.rules_web_enabled,
        web_port=settings.rules_web_port,
        web_bind=settings.rules_web_bind,
        producer_acks=-1,
        broker_session_timeout=settings.rules_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.rules_session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        logging_config=dict_config("safety_rules"),
    )
    events = app.topic(TRIAL_EVENTS.name, **RAW)
    alerts = app.topic(SAFETY_ALERTS.name, **RAW)
    lifecycle = app.topic(ALERT_LIFECYCLE.name, **RAW)
    dead = app.topic(DEAD_LETTER.name, **RAW)
    ticks = app.topic(
        f"{settings.rules_app_id}-ticks", partitions=settings.partitions, internal=True, **RAW
    )
    signals = app.topic(
        f"{settings.rules_app_id}-trial-signals", partitions=1, internal=True, **RAW
    )
    # bytes key and value types make faust use the raw codec for the table and its changelog
    participants = app.Table(
        "participants", partitions=settings.partitions, key_type=bytes, value_type=bytes
    )
    trials = app.Table("trials", partitions=1, key_type=bytes, value_type=bytes)

    async def publish(raised: list[AlertRaised]) -> None:
        """Produces the alerts and waits for the broker's ack. Called before the state that
        records them is written: a crash in between replays the event and raises the same
        alert (same id, same bytes) again, which consumers drop; an alert is never lost."""
        for alert in raised:
            delivered = await alerts.send(key=key_for(alert), value=encode(alert))
            await delivered
            metrics.alerts.labels(alert.rule_id, alert.severity.value).inc()
            lag = datetime.now(UTC) - alert.recorded_at
            metrics.event_to_alert_seconds.observe(max(0.0, lag.total_seconds()))
            fields = {"rule_id": alert.rule_id, "severity": alert.severity.value}
            log.info("alert raised", extra={**fields, "alert_id": str(alert.alert_id)})

    async def withdraw(withdrawn: list[AlertWithdrawn]) -> None:
        """Before the state that records them, like alerts: a repeat is the same bytes."""
        for w in withdrawn:
            await (await lifecycle.send(key=key_for(w), value=encode(w)))
            metrics.withdrawn.labels(w.rule_id).inc()

    @app.agent(events, concurrency=1)
    async def on_event(stream: faust.StreamT[Any]) -> None:
        async for message in stream.events():
            m = message.message
            try:
                event = clinical(message.value)
            except InvalidEvent as e:
                metrics.dead_letters.inc()
                log.warning("dead-lettered %s[%s]@%s: %s", m.topic, m.partition, m.offset, e)
                body = dead_letter(message.value, str(e), m.topic, m.partition, m.offset)
                await dead.send(key=message.key, value=body)
                continue
            current = participants.get(message.key)
            state = ParticipantState.from_json(current) if current else ParticipantState()
            started = time.perf_counter()
            out = evaluate(state, event, cfg)
            metrics.evaluate_seconds.observe(time.perf_counter() - started)
            if out.duplicate:
                metrics.duplicates.inc()
                continue
            metrics.events.labels(event.event_type).inc()
            await publish(out.alerts)
            await withdraw(out.withdrawn)
            for s in out.signals:
                await (
                    await signals.send(key=s.trial_id.encode(), value=s.model_dump_json().encode())
                )
            participants[message.key] = out.state.to_json()

    @app.agent(ticks, concurrency=1)
    async def on_tick(stream: faust.StreamT[Any]) -> None:
        async for key, raw in stream.items():
            current = participants.get(key)
            if not current:
                continue
            metrics.ticks.inc()
            state = ParticipantState.from_json(current)
            first_tick = state.last_tick is None
            out = tick(state, _instant(raw), cfg)
            if out.alerts:
                await publish(out.alerts)
            if out.alerts or first_tick:
                # the tick time is kept: a later dose correction re-judges overdue visits at it
                participants[key] = out.state.to_json()

    @app.agent(signals, concurrency=1)
    async def on_signal(stream: faust.StreamT[Any]) -> None:
        async for key, raw in stream.items():
            current = trials.get(key)
            state = TrialState.model_validate_json(current) if current else TrialState()
            out = evaluate_trial(state, TrialSignal.model_validate_json(raw), cfg)
            await publish(out.alerts)
            if out.state is not state:
                trials[key] = out.state.model_dump_json().encode()

    @app.timer(settings.rules_tick_seconds)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        # The one place the wall clock is read; the engine gets it as an argument.
        now = datetime.now(UTC).isoformat().encode()
        for key in list(participants.keys()):
            await ticks.send(key=key, value=now)

    def ready() -> bool:
        ok = not app.rebalancing and app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        metrics.ready.set(1 if ok else 0)
        return ok

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok = ready()
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        ready()
        # aiohttp refuses a charset inside content_type; the exposition format is utf-8 anyway
        content_type = CONTENT_TYPE_LATEST.split("; charset")[0]
        return web.bytes(generate_latest(metrics.registry), content_type=content_type)

    return RulesApp(
        app=app,
        topics={"events": events, "alerts": alerts, "lifecycle": lifecycle, "dead_letter": dead,
                "ticks": ticks, "signals": signals},
        tables={"participants": participants, "trials": trials},
        agents={"on_event": on_event, "on_tick": on_tick, "on_signal": on_signal},
    )  # fmt: skip


def _instant(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode())
