"""The routes file: who gets what, and mistakes named by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import Channel, Severity
from services.notifier.domain.routes import RoutesError, parse_routes

DEFAULT = Path(__file__).resolve().parents[3] / "services/notifier/routes.yaml"


def test_the_shipped_routes_send_a_critical_alert_by_email_and_webhook_to_the_safety_officer() -> (
    None
):
    routes = parse_routes(DEFAULT.read_text())
    got = {(d.recipient, d.channel) for d in routes.deliveries(Severity.CRITICAL, "sae.reported")}
    assert got == {("safety-officer", Channel.EMAIL), ("safety-officer", Channel.WEBHOOK)}
    stopping = routes.deliveries(Severity.CRITICAL, "trial.stopping_rule")
    assert ("medical-monitor", Channel.EMAIL) in {(d.recipient, d.channel) for d in stopping}
    medium = routes.deliveries(Severity.MEDIUM, "visit.overdue")
    assert [(d.recipient, d.channel, d.address) for d in medium] == [
        ("safety-officer", Channel.EMAIL, "safety.officer@trial.example")
    ]
    assert [s.to for s in routes.escalation] == ["medical-monitor", "principal-investigator"]
    assert routes.step(3) is None


def test_a_recipient_named_twice_by_two_routes_gets_one_message_per_channel() -> None:
    routes = parse_routes(
        "recipients:\n  so: {email: so@x.example}\n"
        "routes:\n  - {to: [so]}\n  - {match: {severity: [critical]}, to: [so]}\n"
    )
    assert len(routes.deliveries(Severity.CRITICAL, "x")) == 1


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("recipients:\n  so: {email: so@x.example}\nroutes:\n  - to: [nobody]\n", 4,
         "routes.0.to.0: 'nobody' is not in recipients"),
        ("recipients:\n  so: {email: not-an-address}\nroutes:\n  - to: [so]\n", 2,
         "recipients.so.email"),
        ("recipients:\n  so: {email: so@x.example}\nroutes:\n  - to: [so]\n"
         "    channels: [pigeon]\n", 5, "routes.0.channels.0"),
        ("recipients:\n  so: {email: so@x.example}\nroutes:\n  - to: [so]\nescalation:\n"
         "  - {after_minutes: 60, to: so}\n  - {after_minutes: 30, to: so}\n", 7,
         "must be later than the level before"),
        ("recipients:\n  so: {email: so@x.example}\nroutes:\n  - to: [so]\n  oops\n", 5,
         "not YAML"),
    ],
)  # fmt: skip
def test_a_mistake_in_the_routes_file_is_named_with_its_line(
    text: str, line: int, reason: str
) -> None:
    with pytest.raises(RoutesError) as e:
        parse_routes(text)
    assert any(n == line and reason in why for n, why in e.value.problems), e.value.problems
    assert f"line {line}" in str(e.value)
