"""A decided message made into what a person reads: an email (plain text and HTML, subject
starting with the severity and rule) or a webhook body (JSON). From Jinja2 templates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from contracts import AlertRaised, Severity
from contracts.common import summary
from services.notifier.domain.desk import Kind, Message
from services.notifier.domain.routes import Routes
from services.notifier.domain.tokens import ack_token

TEMPLATES = Path(__file__).parent / "templates"
COLOURS = {Severity.CRITICAL: "#b00020", Severity.HIGH: "#e65100", Severity.MEDIUM: "#f9a825",
           Severity.INFO: "#1565c0"}  # fmt: skip
SUBJECT_MAX = 250
PREFIX = {Kind.ALERT: "", Kind.ESCALATION: "ESCALATED ", Kind.REMINDER: "REMINDER ",
          Kind.WITHDRAWN: "WITHDRAWN "}  # fmt: skip


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    json_body: bytes


class Renderer:
    def __init__(self, routes: Routes, public_url: str, secret: bytes, link_ttl: timedelta) -> None:
        self.routes, self.public_url, self.secret, self.ttl = routes, public_url, secret, link_ttl
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html", "j2"], default=False),
            keep_trailing_newline=True,
        )
        self.env_text = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False)

    def render(self, m: Message, alerts: list[AlertRaised], now: datetime) -> Rendered:
        worst = min(alerts, key=lambda a: list(Severity).index(a.severity))
        more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
        # one line whatever the alert quotes (a header cannot carry a line break), the count of
        # grouped alerts kept when the title is cut
        head = f"{PREFIX[m.kind]}[{worst.severity.value.upper()}] {worst.rule_id}: "
        subject = head + summary(worst.title, SUBJECT_MAX - len(head) - len(more)) + more
        views = [self._view(a, m.delivery.recipient, now) for a in alerts]
        step = self.routes.step(m.level) if m.kind is Kind.ESCALATION else None
        context = {
            "subject": subject,
            "kind": m.kind.value,
            "level": m.level,
            "window": f"{step.after_minutes:g} min" if step else "",
            "alerts": views,
        }
        body = {
            "key": m.key,
            "kind": m.kind.value,
            "level": m.level,
            "recipient": m.delivery.recipient,
            "sent_at": now.isoformat(),
            "alerts": [{k: v for k, v in view.items() if k not in ("colour",)} for view in views],
        }
        return Rendered(
            subject=subject,
            text=self.env_text.get_template("email.txt.j2").render(context),
            html=self.env.get_template("email.html.j2").render(context),
            json_body=json.dumps(body, sort_keys=True, default=str).encode(),
        )

    def ack_url(self, alert_id: str, recipient: str, now: datetime) -> str:
        token = ack_token(self.secret, alert_id, recipient, now + self.ttl)
        return f"{self.public_url.rstrip('/')}/ack/{token}"

    def _view(self, a: AlertRaised, recipient: str, now: datetime) -> dict[str, Any]:
        return {
            "alert_id": str(a.alert_id),
            "rule_id": a.rule_id,
            "rule_version": a.rule_version,
            "severity": a.severity.value,
            "colour": COLOURS[a.severity],
            "participant": a.participant_id or "(trial level)",
            "title": a.title,
            "facts": sorted((k, v) for k, v in a.facts.items() if v is not None),
            "thresholds": sorted(a.thresholds.items()),
            "due_by": a.due_by.isoformat() if a.due_by else None,
            "time_left": left(a.due_by, now) if a.due_by else None,
            "raised": a.recorded_at.isoformat(),
            "evidence": ", ".join(str(e) for e in a.evidence),
            "ack_url": self.ack_url(str(a.alert_id), recipient, now),
        }


def left(due_by: datetime, now: datetime) -> str:
    """'5 h 12 min left', or '2 h 3 min overdue'."""
    seconds = int((due_by - now).total_seconds())
    minutes = abs(seconds) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours or days) + [f"{mins} min"]
    return " ".join(parts) + (" left" if seconds >= 0 else " overdue")
