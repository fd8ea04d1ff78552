"""The faust worker: decode, call the pure engine, produce. No rule logic lives here.

Topics: trial.events in; safety.alerts and trial.dead-letter out. State lives in faust tables
backed by changelog topics, so a restarted worker resumes where it was. Agents run with
concurrency 1 (faust issue #606: with more, offsets can be committed past messages still in
flight) and scale by partitions. Correctness does not rest on faust's exactly-once: alert ids
are deterministic and every consumer downstream is idempotent by alert_id / event_id.

Time-based rules need a table write outside any stream, which faust refuses, so a timer sends a
tick per known participant to an internal ticks topic (co-partitioned with trial.events: same
key, same partition count) and the tick agent evaluates them in stream context.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import faust

from contracts import AnyEvent, ClinicalEvent, InvalidEvent, decode, encode, key_for
from contracts.topics import DEAD_LETTER, SAFETY_ALERTS, TRIAL_EVENTS
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.engine import evaluate, evaluate_trial, tick
from services.safety_rules.domain.state import ParticipantState
from services.safety_rules.domain.trial import TrialSignal, TrialState
from services.safety_rules.settings import RulesSettings

log = logging.getLogger("safety_rules.worker")
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int, offset: int) -> bytes:
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
    event: AnyEvent = decode(raw or b"")
    if event.event_type not in TRIAL_EVENTS.event_types:
        raise InvalidEvent([])  # pragma: no cover - the topic holds clinical events only
    return event  # type: ignore[return-value]


def build_app(settings: RulesSettings, cfg: RulesConfig) -> faust.App:
    app = faust.App(
        settings.rules_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.rules_data_dir),
        topic_replication_factor=1,
        table_standby_replicas=0,
        topic_partitions=settings.partitions,
        web_enabled=settings.rules_web_enabled,
        web_port=settings.rules_web_port,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
    )
    events = app.topic(TRIAL_EVENTS.name, **RAW)
    alerts = app.topic(SAFETY_ALERTS.name, **RAW)
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

    async def publish(produced: list[Any]) -> None:
        for alert in produced:
            await alerts.send(key=key_for(alert), value=encode(alert))

    @app.agent(events, concurrency=1)
    async def on_event(stream: faust.StreamT[Any]) -> None:
        async for message in stream.events():
            key, raw = message.key, message.value
            try:
                event = clinical(raw)
            except InvalidEvent as e:
                m = message.message
                log.warning("dead-lettered offset %s:%s: %s", m.partition, m.offset, e)
                await dead.send(
                    key=key, value=dead_letter(raw, str(e), m.topic, m.partition, m.offset)
                )
                continue
            current = participants.get(key)
            state = ParticipantState.model_validate_json(current) if current else ParticipantState()
            out = evaluate(state, event, cfg)
            if out.state is not state:
                participants[key] = out.state.model_dump_json().encode()
            await publish(out.alerts)
            for s in out.signals:
                await signals.send(key=s.trial_id.encode(), value=s.model_dump_json().encode())

    @app.agent(ticks, concurrency=1)
    async def on_tick(stream: faust.StreamT[Any]) -> None:
        async for key, raw in stream.items():
            current = participants.get(key)
            if not current:
                continue
            now = datetime.fromisoformat(raw.decode())
            out = tick(ParticipantState.model_validate_json(current), now, cfg)
            if out.alerts:
                participants[key] = out.state.model_dump_json().encode()
                await publish(out.alerts)

    @app.agent(signals, concurrency=1)
    async def on_signal(stream: faust.StreamT[Any]) -> None:
        async for key, raw in stream.items():
            current = trials.get(key)
            state = TrialState.model_validate_json(current) if current else TrialState()
            out = evaluate_trial(state, TrialSignal.model_validate_json(raw), cfg)
            if out.state is not state:
                trials[key] = out.state.model_dump_json().encode()
            await publish(out.alerts)

    @app.timer(settings.rules_tick_seconds)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        # The one place the wall clock is read; the engine gets it as an argument.
        now = datetime.now(UTC).isoformat().encode()
        for key in list(participants.keys()):
            await ticks.send(key=key, value=now)

    return app
