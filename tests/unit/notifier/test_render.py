"""What the safety officer reads: the subject, the values, the deadline and the link."""

from __future__ import annotations

import json
from datetime import timedelta

from services.notifier.domain.desk import Tracked, due
from services.notifier.domain.tokens import check_ack_token
from services.notifier.render import Renderer, left
from tests.unit.notifier.test_desk import ROUTES, T0, alert

SECRET = b"k" * 32


def test_an_email_says_what_happened_to_whom_by_when_and_how_to_acknowledge() -> None:
    a = alert("sae.reported", "critical", pid="DN-004", due_by=T0 + timedelta(hours=20))
    a = a.model_copy(update={"facts": {"grade": 3, "term": "<b>Haematoma</b>"},
                             "thresholds": {"due_hours": 24}})  # fmt: skip
    (email, _) = due([Tracked(a, seen_at=T0)], T0, ROUTES)
    r = Renderer(ROUTES, "https://monitor.example", SECRET, timedelta(hours=72))
    out = r.render(email, [a], T0 + timedelta(hours=2))
    assert out.subject.startswith("[CRITICAL] sae.reported: sae.reported for DN-004")
    assert "participant DN-004" in out.text
    assert "grade: 3" in out.text and "due_hours=24" in out.text
    assert f"due by {a.due_by.isoformat()} (18 h 0 min left)" in out.text  # type: ignore[union-attr]
    link = next(line.split(": ", 1)[1] for line in out.text.splitlines() if "Acknowledge:" in line)
    token = link.removeprefix("https://monitor.example/ack/")
    grant = check_ack_token(SECRET, token, T0 + timedelta(hours=3))
    assert (grant.alert_id, grant.recipient) == (str(a.alert_id), "safety-officer")
    assert "&lt;b&gt;Haematoma&lt;/b&gt;" in out.html  # values are escaped in HTML
    body = json.loads(out.json_body)
    assert body["alerts"][0]["participant"] == "DN-004" and body["kind"] == "alert"


def test_an_escalation_names_its_level_and_window_and_a_burst_lists_every_alert() -> None:
    t = Tracked(alert("egfr.decline", "critical"), seen_at=T0, noticed=True)
    (esc,) = due([t], T0 + timedelta(minutes=31), ROUTES)
    r = Renderer(ROUTES, "https://m.example", SECRET, timedelta(hours=1))
    out = r.render(esc, [t.alert], T0 + timedelta(minutes=31))
    assert out.subject.startswith("ESCALATED [CRITICAL] egfr.decline")
    assert "level 1: not acknowledged after 30 min" in out.text
    burst = [alert("creatinine.aki", "high", n=1), alert("uacr.rise", "medium", n=2)]
    many = r.render(esc, burst, T0)
    assert many.subject.endswith("(+1 more)") and "[HIGH] creatinine.aki" in many.subject
    assert "uacr.rise" in many.text and "creatinine.aki" in many.text


def test_time_left_reads_in_days_hours_and_minutes_and_says_overdue() -> None:
    assert left(T0 + timedelta(days=6, hours=3, minutes=5), T0) == "6 d 3 h 5 min left"
    assert left(T0 - timedelta(hours=2, minutes=3), T0) == "2 h 3 min overdue"


def test_a_line_break_in_what_an_alert_quotes_gives_a_one_line_subject_and_the_email_goes() -> None:
    """An alert recorded before titles were summaries may carry a term's CR/LF; Python's email
    refused such a Subject, and the SAE's email was retried forever."""
    from email import message_from_bytes, policy

    from services.notifier.adapters.channels import Email
    from services.notifier.render import SUBJECT_MAX

    a = alert("sae.reported", "critical", pid="DN-004")
    a = a.model_copy(update={"title": "Serious AE: Haematoma\r\nBcc: x@evil.example" + "x" * 300})
    (email, _) = due([Tracked(a, seen_at=T0)], T0, ROUTES)
    out = Renderer(ROUTES, "https://m.example", SECRET, timedelta(hours=1)).render(email, [a], T0)
    assert out.subject.startswith("[CRITICAL] sae.reported: Serious AE: Haematoma Bcc: x@evil")
    assert len(out.subject) == SUBJECT_MAX and out.subject.endswith("\u2026")
    mail = Email("127.0.0.1", 25, "monitor@m.example").build(email.key, "so@m.example", out)
    sent = message_from_bytes(mail.as_bytes(), policy=policy.default)
    assert sent["Bcc"] is None and "Haematoma Bcc" in str(sent["Subject"])
