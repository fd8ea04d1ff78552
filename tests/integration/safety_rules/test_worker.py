"""The rules worker on the real broker: alerts out, dead letters, restarts, ticks, scale-out."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from contracts import AlertRaised, AlertWithdrawn, decode
from contracts.dead_letters import original
from tests.integration.kafka_io import produce, produce_raw, wait_for
from tests.integration.safety_rules.worker_process import Worker
from tests.unit.safety_rules.builders import DAY0, ParticipantBuilder, a_participant


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}-1"


def alerts_for(messages: list[tuple[bytes | None, bytes]], pids: set[str]) -> list[AlertRaised]:
    out = []
    for _, raw in messages:
        alert = decode(raw)
        assert isinstance(alert, AlertRaised)
        if alert.participant_id in pids:
            out.append(alert)
    return out


def rules_of(alerts: list[AlertRaised]) -> set[str]:
    return {a.rule_id for a in alerts}


async def test_alerts_survive_restarts_with_none_lost_or_repeated(
    kafka: str, tmp_path: Path
) -> None:
    pid, app_id = unique("RS"), unique("rules")
    p: ParticipantBuilder = (
        a_participant(pid)
        .enrolled(sex="M", age=50)
        .dosed(cells_per_kg=1.3e6)
        .baseline("creatinine", 1.0)
    )
    first = p.events()
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        await produce(kafka, list(first))
        got = await wait_for(
            kafka, "safety.alerts", lambda m: rules_of(alerts_for(m, {pid})) == {"dose.deviation"}
        )

        # A malformed message is dead-lettered with its reason; the worker carries on.
        await produce_raw(kafka, "trial.events", pid.encode(), b'{"event_type": "lab.resulted"}')
        dead = await wait_for(
            kafka, "trial.dead-letter", lambda m: any(k == pid.encode() for k, _ in m)
        )
        letter = next(v for k, v in dead if k == pid.encode())
        assert "event_id: is required" in json.loads(letter)["reason"]
        assert original(letter) == b'{"event_type": "lab.resulted"}'
    finally:
        assert worker.stop(signal.SIGTERM) is not None

    # While it is down: a rise needing the baseline it saw before, and a duplicate of the dose.
    second = p.lab("creatinine", 2.0, day=30, visit="M1").events()[len(first) :]
    await produce(kafka, [*second, first[1]])
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        expected = {"dose.deviation", "creatinine.aki", "egfr.decline"}
        got = await wait_for(
            kafka, "safety.alerts", lambda m: rules_of(alerts_for(m, {pid})) == expected
        )
        counts = Counter(a.alert_id for a in alerts_for(got, {pid}))
        assert set(counts.values()) == {1}, "an alert was produced twice"
        (aki,) = [a for a in alerts_for(got, {pid}) if a.rule_id == "creatinine.aki"]
        assert aki.facts["stage"] == 2 and aki.severity.value == "critical"
    finally:
        worker.stop(signal.SIGKILL)  # a crash, this time

    await produce(kafka, p.ae(serious=True, ctcae_grade=3).events()[-1:])
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        got = await wait_for(
            kafka, "safety.alerts", lambda m: "sae.reported" in rules_of(alerts_for(m, {pid}))
        )
        by_id: dict[uuid.UUID, set[bytes]] = {}
        for _, raw in got:
            a = decode(raw)
            if isinstance(a, AlertRaised) and a.participant_id == pid:
                by_id.setdefault(a.alert_id, set()).add(raw)
        assert rules_of(alerts_for(got, {pid})) == {*expected, "sae.reported"}
        # after a crash a repeat is possible only as the very same bytes, which consumers drop
        assert all(len(versions) == 1 for versions in by_id.values())
    finally:
        worker.stop()


async def test_time_based_rules_run_on_the_worker_clock(kafka: str, tmp_path: Path) -> None:
    pid = unique("TK")
    dosed_day = (datetime.now(UTC) - DAY0).days - 60  # dosed 60 days ago: M1 is overdue
    events = a_participant(pid).enrolled(day=dosed_day - 5).dosed(day=dosed_day).events()
    worker = Worker(kafka, unique("rules"), tmp_path, tick_s=1)
    try:
        worker.wait_ready()
        await produce(kafka, list(events))
        got = await wait_for(
            kafka, "safety.alerts", lambda m: "visit.overdue" in rules_of(alerts_for(m, {pid}))
        )
        overdue = [a for a in alerts_for(got, {pid}) if a.rule_id == "visit.overdue"]
        assert [a.thresholds["visit"] for a in overdue] == ["M1"]
    finally:
        worker.stop()


async def test_two_workers_split_the_partitions_and_raise_each_alert_once(
    kafka: str, tmp_path: Path
) -> None:
    app_id = unique("rules")
    pids = {unique(f"SC{n}") for n in range(24)}
    workers = [Worker(kafka, app_id, tmp_path), Worker(kafka, app_id, tmp_path)]
    try:
        for w in workers:
            w.wait_ready()
        events = [
            e
            for pid in sorted(pids)
            for e in a_participant(pid)
            .enrolled()
            .dosed(cells_per_kg=2e6)
            .ae(serious=True, ctcae_grade=3, relatedness="probable")
            .events()
        ]
        await produce(kafka, events)
        got = await wait_for(
            kafka, "safety.alerts", lambda m: len(alerts_for(m, pids)) >= 2 * len(pids)
        )
        mine = alerts_for(got, pids)
        assert Counter(a.rule_id for a in mine) == {"dose.deviation": 24, "sae.reported": 24}
        assert len({a.alert_id for a in mine}) == len(mine)
        processed = [w.metric("safety_monitor_rules_events_total") for w in workers]
        assert all(n > 0 for n in processed), f"one worker did all the work: {processed}"

        # the trial-level stopping rule saw both workers' participants
        def stopping(messages: list[tuple[bytes | None, bytes]]) -> bool:
            return any(k == b"trial" and b'"trial.stopping_rule"' in v for k, v in messages)

        await wait_for(kafka, "safety.alerts", stopping)
    finally:
        for w in workers:
            w.stop()


async def test_late_data_raises_and_a_correction_withdraws_on_the_real_broker(
    kafka: str, tmp_path: Path
) -> None:
    """Arrival order is not clinical order: the baseline is entered after the M1 result; then the
    M1 result is corrected, and the worker withdraws the alerts it stood on."""
    pid = unique("LT")
    b = a_participant(pid).enrolled(sex="M", age=50).dosed(day=0)
    b.lab("creatinine", 1.9, day=30, visit="M1").baseline("creatinine", 1.0, day=-5)
    b.corrected(2, value=1.05)
    *first, correction = b.events()
    worker = Worker(kafka, unique("rules"), tmp_path)
    try:
        worker.wait_ready()
        await produce(kafka, first)
        got = await wait_for(
            kafka,
            "safety.alerts",
            lambda m: {"egfr.decline", "creatinine.aki"} <= rules_of(alerts_for(m, {pid})),
        )
        raised = {str(a.alert_id).encode() for a in alerts_for(got, {pid})}
        await produce(kafka, [correction])
        life = await wait_for(
            kafka, "safety.alert-lifecycle", lambda m: sum(k in raised for k, _ in m) >= 2
        )
        withdrawn = [decode(v) for k, v in life if k in raised]
        assert all(isinstance(w, AlertWithdrawn) for w in withdrawn)
        assert sorted(w.rule_id for w in withdrawn) == ["creatinine.aki", "egfr.decline"]  # type: ignore[union-attr]
        assert {w.withdrawn_by for w in withdrawn} == {correction.event_id}  # type: ignore[union-attr]
        assert worker.metric("safety_monitor_rules_alerts_withdrawn_total") == 2
    finally:
        worker.stop()
