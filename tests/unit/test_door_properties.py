"""Everything the door accepts is evaluated and told: events generated at the contract's bounds
(tests/unit/door.py) go through the rule engine and every channel's rendering without an
exception, and what a person reads is a one-line summary, never a refusal."""

from __future__ import annotations

import json
from datetime import timedelta
from email import message_from_bytes, policy

from hypothesis import HealthCheck, given, settings
from jinja2 import Environment, FileSystemLoader, select_autoescape

from contracts import AlertRaised, ClinicalEvent, decode, encode
from contracts.common import NAME_MAX
from services.notifier.adapters.channels import Email
from services.notifier.domain.desk import Tracked, due
from services.notifier.render import SUBJECT_MAX, TEMPLATES, Renderer
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.evaluate import run
from tests.unit.door import NOW, accepted_history
from tests.unit.notifier.test_desk import ROUTES

CFG = RulesConfig()
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
RENDERER = Renderer(ROUTES, "https://monitor.example", b"k" * 32, timedelta(hours=72))
EMAIL = Email("127.0.0.1", 25, "safety-monitor@monitor.example")


PAGES = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())


def shown(alerts: list[AlertRaised]) -> None:
    """The live page's board and an acknowledge page, as the notifier renders them."""
    board = [
        {"alert_id": str(a.alert_id), "severity": a.severity.value, "rule_id": a.rule_id,
         "participant": a.participant_id, "title": a.title,
         "due_by": a.due_by.isoformat() if a.due_by else None, "status": "open",
         "acknowledged_by": None, "failing": ["safety-officer webhook"]}
        for a in alerts
    ]  # fmt: skip
    html = PAGES.get_template("board.html.j2").render(who="safety-officer", board=board,
                                                       severities=["critical"])  # fmt: skip
    assert "</script>" not in html.split('id="board"', 1)[1].split("</script>", 1)[0]
    for a in alerts[:3]:
        PAGES.get_template("ack.html.j2").render(
            heading="Acknowledge this alert", alert=a, recipient="safety-officer",
            can_ack=True, detail="Status: open",
        )  # fmt: skip


def told(alerts: list[AlertRaised]) -> None:
    """Every message the desk decides for `alerts`, rendered and built for its channel."""
    tracked = [Tracked(a, seen_at=NOW) for a in alerts]
    by_id = {str(a.alert_id): a for a in alerts}
    for m in due(tracked, NOW, ROUTES):
        out = RENDERER.render(m, [by_id[i] for i in m.alert_ids], NOW)
        assert "\n" not in out.subject and "\r" not in out.subject
        assert len(out.subject) <= SUBJECT_MAX
        json.loads(out.json_body)
        mail = EMAIL.build(m.key, "officer@site.example", out)
        sent = message_from_bytes(mail.as_bytes(), policy=policy.default)
        # one header, whole, as rendered (a long one folded on the wire, unfolded here; the
        # space between two encoded words is not kept by Python's folding, so spaces are not
        # compared)
        assert "".join(str(sent["Subject"]).split()) == "".join(out.subject.split())


def check(events: list[ClinicalEvent]) -> list[AlertRaised]:
    alerts = run(events, CFG, as_of=NOW + timedelta(days=800))
    for a in alerts:
        assert len(a.title) <= NAME_MAX and a.title == a.title.strip()
        assert not any(c in a.title for c in "\r\n\t\x00\u2028")
        assert decode(encode(a)) == a  # what the worker puts on safety.alerts, read back
    told(alerts)
    shown(alerts)
    return alerts


@PROPERTY
@given(accepted_history())
def test_every_accepted_history_is_evaluated_and_told(events: list[ClinicalEvent]) -> None:
    check(events)
