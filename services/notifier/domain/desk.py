"""The safety officer's desk: what is due to whom, and when, for the alerts the notifier holds.

Pure: alerts and lifecycle facts folded into `Tracked` alerts; `due(tracked, now, routes)` says
what to send at `now` (first notices, a burst grouped per participant, escalations, reminders,
withdrawn notices). Time is a parameter: the adapters pass the clock, the tests pass a fixed one.
Every message has a deterministic key, so deciding twice never sends twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from contracts import AlertRaised, Channel, Severity
from services.notifier.domain.routes import Delivery, Routes


class Status(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    WITHDRAWN = "withdrawn"
    RESOLVED = "resolved"


class Kind(StrEnum):
    ALERT = "alert"  # the first notice (one alert, or a burst of one participant's alerts)
    ESCALATION = "escalation"
    REMINDER = "reminder"
    WITHDRAWN = "withdrawn"


@dataclass
class Tracked:
    """One alert as the notifier knows it. `seen_at` is when the notifier received it (the
    broker's timestamp): escalation windows count from there, not from the clinical time."""

    alert: AlertRaised
    seen_at: datetime
    status: Status = Status.OPEN
    level: int = 0  # escalation levels already sent
    reminded: bool = False
    noticed: bool = False  # its first notice has gone out (alone or in a group)
    told: set[tuple[str, str]] = field(default_factory=set)  # (recipient, channel) sent to
    withdrawn_noticed: bool = False

    @property
    def alert_id(self) -> str:
        return str(self.alert.alert_id)


@dataclass(frozen=True)
class Message:
    """One message to one recipient on one channel, about one or more alerts."""

    key: str  # deterministic: the outbox's unique key, the email's Message-ID, the webhook's
    kind: Kind  # Idempotency-Key
    delivery: Delivery
    alert_ids: tuple[str, ...]
    level: int = 0


def due(tracked: list[Tracked], now: datetime, routes: Routes) -> list[Message]:
    """Everything to send at `now`, and the trackers updated as if it was sent (the caller
    records the messages in its outbox in the same transaction as the trackers)."""
    return [
        *_notices(tracked, now, routes),
        *_escalations(tracked, now, routes),
        *_reminders(tracked, now, routes),
        *_withdrawn(tracked, routes),
    ]


def _notices(tracked: list[Tracked], now: datetime, routes: Routes) -> list[Message]:
    """First notices. A critical alert goes at once, alone. Other alerts wait until the
    group window after the participant's oldest waiting alert has passed, then go as one
    message per recipient and channel listing them all."""
    window = timedelta(seconds=routes.group_window_seconds)
    out: list[Message] = []
    waiting: dict[str, list[Tracked]] = {}
    for t in tracked:
        if t.noticed or t.status is not Status.OPEN:
            continue
        if t.alert.severity is Severity.CRITICAL or window <= timedelta(0):
            out += _send(Kind.ALERT, [t], routes, f"alert|{t.alert_id}")
        else:
            waiting.setdefault(t.alert.participant_id or "trial", []).append(t)
    for _, burst in sorted(waiting.items()):
        if now < min(t.seen_at for t in burst) + window:
            continue  # the burst may still grow
        burst.sort(key=lambda t: (t.seen_at, t.alert_id))
        out += _send(Kind.ALERT, burst, routes, "alert|" + "+".join(t.alert_id for t in burst))
    return out


def _send(kind: Kind, group: list[Tracked], routes: Routes, key: str) -> list[Message]:
    """One message per (recipient, channel) that any alert of the group routes to."""
    targets: dict[tuple[str, str], Delivery] = {}
    for t in group:
        for d in routes.deliveries(t.alert.severity, t.alert.rule_id):
            targets.setdefault((d.recipient, d.channel.value), d)
    ids = tuple(t.alert_id for t in group)
    for t in group:
        t.noticed = True
        t.told |= set(targets)
    return [
        Message(f"{key}|{name}|{channel}", kind, d, ids)
        for (name, channel), d in sorted(targets.items())
    ]


def _escalations(tracked: list[Tracked], now: datetime, routes: Routes) -> list[Message]:
    """An open alert of an escalating severity whose next window has passed goes to the next
    level of the chain; every level whose window passed, in order, until the chain ends."""
    out = []
    for t in tracked:
        if t.status is not Status.OPEN or t.alert.severity not in routes.escalate_severities:
            continue
        while (step := routes.step(t.level + 1)) is not None and now >= t.seen_at + timedelta(
            minutes=step.after_minutes
        ):
            t.level += 1
            recipient = routes.recipients[step.to]
            for channel in step.channels:
                address = recipient.address(channel)
                if address is None:
                    continue
                d = Delivery(step.to, channel, address)
                t.told.add((step.to, channel.value))
                key = f"escalation|{t.alert_id}|{t.level}|{step.to}|{channel.value}"
                out.append(Message(key, Kind.ESCALATION, d, (t.alert_id,), t.level))
    return out


def _reminders(tracked: list[Tracked], now: datetime, routes: Routes) -> list[Message]:
    """An open alert whose regulatory deadline is within `reminder_before_due_hours`: one
    reminder to everyone told of it so far."""
    ahead = timedelta(hours=routes.reminder_before_due_hours)
    out = []
    for t in tracked:
        due_by = t.alert.due_by
        # due_by - now, never due_by - ahead: a deadline in year 1 or 9999 (whatever a producer
        # wrote on the topic) must not overflow and stop the desk for every alert
        if t.status is not Status.OPEN or t.reminded or due_by is None or due_by - now > ahead:
            continue
        t.reminded = True
        for name, channel in sorted(t.told):
            d = _delivery(routes, name, channel)
            if d is not None:
                key = f"reminder|{t.alert_id}|{name}|{channel}"
                out.append(Message(key, Kind.REMINDER, d, (t.alert_id,)))
    return out


def _withdrawn(tracked: list[Tracked], routes: Routes) -> list[Message]:
    """A withdrawn alert: a short notice to whoever was told of it (nobody, if it was still
    waiting in a group: it simply never goes out)."""
    out = []
    for t in tracked:
        if t.status is not Status.WITHDRAWN or t.withdrawn_noticed:
            continue
        t.withdrawn_noticed = True
        out += [
            Message(f"withdrawn|{t.alert_id}|{name}|{channel}", Kind.WITHDRAWN, d, (t.alert_id,))
            for name, channel in sorted(t.told)
            if (d := _delivery(routes, name, channel)) is not None
        ]
    return out


def _delivery(routes: Routes, name: str, channel: str) -> Delivery | None:
    recipient = routes.recipients.get(name)
    address = recipient.address(Channel(channel)) if recipient else None
    return Delivery(name, Channel(channel), address) if address else None
