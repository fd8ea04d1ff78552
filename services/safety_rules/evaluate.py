"""`safety-monitor evaluate EVENTS.jsonl [--as-of T]`: the engine offline over a JSONL file.

Writes each alert.raised (and each alert.withdrawn a correction causes) as one JSON line on
stdout, in the order raised; time-based rules are evaluated once at --as-of (default: the latest
event time). A malformed line stops the run with
its line number and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TextIO

from contracts import AlertRaised, AlertWithdrawn, ClinicalEvent, InvalidEvent, decode, encode
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.engine import engine_failed, evaluate, evaluate_trial, tick
from services.safety_rules.domain.state import ParticipantState
from services.safety_rules.domain.trial import TrialState


class BadLine(ValueError):
    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number = number


def read_events(lines: Iterable[str]) -> Iterator[ClinicalEvent]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = decode(line)
        except InvalidEvent as e:
            raise BadLine(number, str(e)) from None
        if event.event_type.startswith("alert."):
            raise BadLine(number, f"event_type: {event.event_type} is not a clinical event")
        yield event  # type: ignore[misc]


def run(
    events: Iterable[ClinicalEvent], cfg: RulesConfig, as_of: datetime | None
) -> list[AlertRaised]:
    """The alerts raised, in the order raised."""
    return [a for a in run_all(events, cfg, as_of) if isinstance(a, AlertRaised)]


def run_all(
    events: Iterable[ClinicalEvent], cfg: RulesConfig, as_of: datetime | None
) -> list[AlertRaised | AlertWithdrawn]:
    """The alerts raised and withdrawn, in the order they happened."""
    participants: dict[str, ParticipantState] = {}
    trials: dict[str, TrialState] = {}
    histories: dict[str, list[ClinicalEvent]] = {}  # what each state was folded from
    alerts: list[AlertRaised | AlertWithdrawn] = []
    latest: datetime | None = None
    for event in events:
        if latest is None or event.occurred_at > latest:
            latest = event.occurred_at
        pid = event.participant_id
        try:
            out = evaluate(participants.get(pid) or ParticipantState(), event, cfg)
        except Exception as e:
            # as the worker does: the event is left out, and a critical alert says so
            alerts.append(engine_failed(event, type(e).__name__))
            participants[pid] = _refold(histories.get(pid, []), cfg)
            continue
        histories.setdefault(pid, []).append(event)
        participants[pid] = out.state
        alerts += out.alerts
        alerts += out.withdrawn
        for signal in out.signals:
            t = evaluate_trial(trials.get(signal.trial_id) or TrialState(), signal, cfg)
            trials[signal.trial_id] = t.state
            alerts += t.alerts
    now = as_of or latest
    if now is not None:
        for pid, state in sorted(participants.items()):
            out = tick(state, now, cfg)
            participants[pid] = out.state
            alerts += out.alerts
    return alerts


def _refold(events: list[ClinicalEvent], cfg: RulesConfig) -> ParticipantState:
    """A participant's state folded anew from the events it took (after the engine failed on
    one, which may have left it half-folded); what they raise was raised before."""
    state = ParticipantState()
    for event in events:
        state = evaluate(state, event, cfg).state
    return state


def write(alerts: Iterable[AlertRaised | AlertWithdrawn], out: TextIO) -> None:
    for alert in alerts:
        out.write(encode(alert).decode() + "\n")
