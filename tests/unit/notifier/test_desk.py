"""What the notifier sends, and when, on a controllable clock: first notices, bursts grouped per
participant, escalation along the chain, reminders before a deadline, withdrawn notices."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts import AlertRaised
from services.notifier.domain.desk import Kind, Message, Status, Tracked, due
from services.notifier.domain.routes import Routes, parse_routes

ROUTES = parse_routes(
    (Path(__file__).resolve().parents[3] / "services/notifier/routes.yaml").read_text()
)
T0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


def alert(rule: str, severity: str, pid: str = "DN-001", due_by: datetime | None = None,
          n: int = 0) -> AlertRaised:  # fmt: skip
    alert_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{rule}/{pid}/{n}")
    return AlertRaised.model_validate(
        {
            "event_id": str(uuid.uuid5(alert_id, "raised")),
            "trial_id": "UCMSC-DN-01",
            "participant_id": pid,
            "occurred_at": (T0 - timedelta(days=2)).isoformat(),
            "recorded_at": (T0 - timedelta(hours=1)).isoformat(),
            "recorded_by": "service:safety_rules",
            "source": "safety_rules",
            "alert_id": str(alert_id),
            "rule_id": rule,
            "rule_version": 1,
            "severity": severity,
            "title": f"{rule} for {pid}",
            "evidence": [str(uuid.uuid4())],
            "due_by": due_by.isoformat() if due_by else None,
        }
    )


def sent(messages: list[Message]) -> set[tuple[str, str, str, int]]:
    return {
        (m.kind.value, m.delivery.recipient, m.delivery.channel.value, m.level) for m in messages
    }


def test_a_critical_alert_goes_at_once_by_email_and_webhook_and_only_once() -> None:
    t = Tracked(alert("sae.reported", "critical"), seen_at=T0)
    first = due([t], T0, ROUTES)
    assert sent(first) == {
        ("alert", "safety-officer", "email", 0),
        ("alert", "safety-officer", "webhook", 0),
    }
    assert due([t], T0 + timedelta(seconds=5), ROUTES) == []
    assert len({m.key for m in first}) == 2


def test_a_burst_for_one_participant_goes_as_one_message_and_a_critical_one_is_not_held() -> None:
    burst = [
        Tracked(alert("creatinine.aki", "high", n=1), seen_at=T0),
        Tracked(alert("egfr.decline", "high", n=2), seen_at=T0 + timedelta(seconds=10)),
        Tracked(alert("uacr.rise", "medium", n=3), seen_at=T0 + timedelta(seconds=20)),
        Tracked(alert("sae.reported", "critical", n=4), seen_at=T0 + timedelta(seconds=20)),
    ]
    other = Tracked(alert("uacr.rise", "medium", pid="DN-002"), seen_at=T0 + timedelta(seconds=50))
    now = T0 + timedelta(seconds=20)
    at_once = due([*burst, other], now, ROUTES)
    assert {m.alert_ids for m in at_once} == {(burst[3].alert_id,)}  # the critical one
    assert due([*burst, other], T0 + timedelta(seconds=59), ROUTES) == []  # still gathering
    grouped = due([*burst, other], T0 + timedelta(seconds=60), ROUTES)
    ids = tuple(t.alert_id for t in burst[:3])
    assert {(m.delivery.channel.value, m.alert_ids) for m in grouped} == {
        ("email", ids),
        ("webhook", ids),  # the group holds high alerts, which go by webhook too
    }
    later = due([*burst, other], T0 + timedelta(seconds=110), ROUTES)
    assert [m.alert_ids for m in later] == [(other.alert_id,)]  # DN-002's own window


def test_an_unacknowledged_critical_alert_climbs_the_chain_until_acknowledged() -> None:
    t = Tracked(alert("egfr.decline", "critical"), seen_at=T0)
    due([t], T0, ROUTES)
    assert due([t], T0 + timedelta(minutes=29, seconds=59), ROUTES) == []
    assert sent(due([t], T0 + timedelta(minutes=30), ROUTES)) == {
        ("escalation", "medical-monitor", "email", 1)
    }
    t.status = Status.ACKNOWLEDGED
    assert due([t], T0 + timedelta(minutes=61), ROUTES) == []


def test_a_worker_that_checks_late_sends_every_level_whose_window_passed_in_order() -> None:
    t = Tracked(alert("egfr.decline", "critical"), seen_at=T0, noticed=True)
    late = due([t], T0 + timedelta(hours=3), ROUTES)
    assert [(m.level, m.delivery.recipient) for m in late] == [
        (1, "medical-monitor"),
        (2, "principal-investigator"),
    ]
    assert due([t], T0 + timedelta(hours=9), ROUTES) == []  # the chain has ended
    high = Tracked(alert("creatinine.aki", "high"), seen_at=T0, noticed=True)
    assert due([high], T0 + timedelta(hours=3), ROUTES) == []  # only critical ones escalate


def test_a_deadline_four_hours_away_reminds_everyone_told_once() -> None:
    deadline = T0 + timedelta(hours=24)
    t = Tracked(alert("sae.reported", "critical", due_by=deadline), seen_at=T0)
    t.level = 2  # the chain has run: everyone told
    due([t], T0, ROUTES)
    t.told |= {("medical-monitor", "email")}
    assert due([t], deadline - timedelta(hours=4, seconds=1), ROUTES) == []
    reminders = due([t], deadline - timedelta(hours=4), ROUTES)
    assert sent(reminders) == {
        ("reminder", "safety-officer", "email", 0),
        ("reminder", "safety-officer", "webhook", 0),
        ("reminder", "medical-monitor", "email", 0),
    }
    assert due([t], deadline - timedelta(hours=1), ROUTES) == []


def test_a_withdrawn_alert_is_withdrawn_to_whoever_was_told_and_to_nobody_else() -> None:
    told = Tracked(alert("sae.reported", "critical"), seen_at=T0)
    waiting = Tracked(alert("uacr.rise", "medium", pid="DN-009"), seen_at=T0)
    due([told, waiting], T0, ROUTES)
    told.status = waiting.status = Status.WITHDRAWN
    notices = due([told, waiting], T0 + timedelta(minutes=5), ROUTES)
    assert {(m.kind, m.alert_ids) for m in notices} == {(Kind.WITHDRAWN, (told.alert_id,))}
    assert len(notices) == 2  # email and webhook, as the alert went
    assert due([told, waiting], T0 + timedelta(hours=2), ROUTES) == []  # never escalated


def test_message_keys_are_the_same_whenever_decided() -> None:
    def keys(routes: Routes) -> list[str]:
        t = Tracked(alert("sae.reported", "critical"), seen_at=T0)
        return [m.key for m in due([t], T0 + timedelta(hours=2), routes)]

    assert keys(ROUTES) == keys(ROUTES)
    assert len(set(keys(ROUTES))) == len(keys(ROUTES)) == 4  # 2 notices + 2 escalations


def test_a_deadline_at_the_edge_of_time_never_stops_the_desk_for_the_other_alerts() -> None:
    # whatever a producer wrote on the topic: due_by in year 1 or 9999 (both valid in UTC)
    ancient = datetime(1, 1, 1, tzinfo=UTC)
    far = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    tracked = [
        Tracked(alert("sae.reported", "critical", pid="DN-002", due_by=ancient), seen_at=T0),
        Tracked(alert("sae.reported", "critical", pid="DN-003", due_by=far), seen_at=T0),
        Tracked(alert("sae.reported", "critical", pid="DN-004"), seen_at=T0),
    ]
    first = due(tracked, T0, ROUTES)
    told = {pid for m in first for pid in m.alert_ids}
    assert told == {t.alert_id for t in tracked}  # every alert told, the odd ones too
    reminded = {m.alert_ids for m in first if m.kind is Kind.REMINDER}
    assert reminded == {(tracked[0].alert_id,)}  # the year-1 deadline is long past: due now
