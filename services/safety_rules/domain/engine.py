"""The engine: fold an event into a participant's state and return the alerts it raises.

    evaluate(state, event, cfg)         -> Outcome(state, alerts, signals)   per clinical event
    tick(state, now, cfg)               -> Outcome(state, alerts, [])        time-based rules
    evaluate_trial(trial, signal, cfg)  -> TrialOutcome(trial, alerts)       the stopping rule

Idempotent by construction: an event already seen changes nothing, every alert_id is a uuid5 of
(rule, participant, trigger), and an alert already raised for a participant is never raised again.
The alert envelope is derived from the trigger, so a replay yields byte-identical alerts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from contracts import AeReported, AeUpdated, AlertRaised, ClinicalEvent, Source, alert_id_for
from contracts.alerts import ALERT_NAMESPACE
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.adverse_events import AeSevere, SaeReported, SusarClock
from services.safety_rules.domain.rules.base import Draft, ParticipantRule
from services.safety_rules.domain.rules.kidney import (
    CreatinineAki,
    EgfrDecline,
    EgfrKidneyFailure,
    EgfrRapidSlope,
    LabEgfrMismatch,
)
from services.safety_rules.domain.rules.other import DoseDeviation, InflammationRise, UacrRise
from services.safety_rules.domain.rules.visits import VisitOverdue
from services.safety_rules.domain.state import ParticipantState, apply
from services.safety_rules.domain.trial import (
    TrialSignal,
    TrialState,
    TrialStoppingRule,
    apply_signal,
)

RECORDED_BY = "service:safety_rules"

PARTICIPANT_RULES: tuple[ParticipantRule, ...] = (
    SaeReported(),
    SusarClock(),
    AeSevere(),
    CreatinineAki(),
    EgfrDecline(),
    EgfrKidneyFailure(),
    EgfrRapidSlope(),
    UacrRise(),
    InflammationRise(),
    DoseDeviation(),
    LabEgfrMismatch(),
)
VISIT_OVERDUE = VisitOverdue()
STOPPING_RULE = TrialStoppingRule()
ALL_RULE_IDS: tuple[str, ...] = (
    *(r.rule_id for r in PARTICIPANT_RULES),
    VISIT_OVERDUE.rule_id,
    STOPPING_RULE.rule_id,
)


@dataclass(frozen=True)
class Outcome:
    state: ParticipantState
    alerts: list[AlertRaised] = field(default_factory=list)
    signals: list[TrialSignal] = field(default_factory=list)


@dataclass(frozen=True)
class TrialOutcome:
    state: TrialState
    alerts: list[AlertRaised] = field(default_factory=list)


def enabled(cfg: RulesConfig, rule_id: str) -> bool:
    thresholds = getattr(cfg, rule_id.replace(".", "_"))
    return bool(thresholds.enabled)


def to_alert(
    draft: Draft,
    *,
    trial_id: str,
    participant_id: str | None,
    occurred_at: datetime,
    recorded_at: datetime,
) -> AlertRaised:
    alert_id = alert_id_for(draft.rule_id, participant_id, draft.trigger)
    return AlertRaised(
        event_id=uuid.uuid5(ALERT_NAMESPACE, f"raised|{alert_id}"),
        trial_id=trial_id,
        participant_id=participant_id,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        recorded_by=RECORDED_BY,
        source=Source.SAFETY_RULES,
        alert_id=alert_id,
        rule_id=draft.rule_id,
        rule_version=draft.rule_version,
        severity=draft.severity,
        title=draft.title,
        evidence=[uuid.UUID(e) for e in draft.evidence],
        due_by=draft.due_by,
        thresholds=draft.thresholds,
        facts=draft.facts,
    )


def _keep_new(raised: set[str], alerts: list[AlertRaised]) -> list[AlertRaised]:
    fresh = []
    for a in alerts:
        if str(a.alert_id) not in raised:
            raised.add(str(a.alert_id))
            fresh.append(a)
    return fresh


def _signal(event: ClinicalEvent, state: ParticipantState) -> list[TrialSignal]:
    if not isinstance(event, AeReported | AeUpdated):
        return []
    ae = state.aes[event.ae_id]
    return [
        TrialSignal(
            trial_id=event.trial_id,
            participant_id=event.participant_id,
            ae_id=ae.ae_id,
            event_id=ae.event_id,
            grade=ae.grade,
            serious=ae.serious,
            related=ae.related,
            fatal=ae.fatal,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
        )
    ]


def evaluate(state: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> Outcome:
    if str(event.event_id) in state.seen:
        return Outcome(state)
    new = apply(state, event)
    drafts = [
        d
        for rule in PARTICIPANT_RULES
        if enabled(cfg, rule.rule_id)
        for d in rule.check(new, event, cfg)
    ]
    alerts = [
        to_alert(
            d,
            trial_id=event.trial_id,
            participant_id=event.participant_id,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
        )
        for d in drafts
    ]
    return Outcome(new, _keep_new(new.raised, alerts), _signal(event, new))


def tick(state: ParticipantState, now: datetime, cfg: RulesConfig) -> Outcome:
    """Time-based rules at `now`. Each alert is stamped with the moment its condition began."""
    if not enabled(cfg, VISIT_OVERDUE.rule_id) or state.trial_id is None:
        return Outcome(state)
    due = VISIT_OVERDUE.due(state, now, cfg)
    alerts = [
        to_alert(
            d,
            trial_id=state.trial_id,
            participant_id=state.participant_id,
            occurred_at=at,
            recorded_at=at,
        )
        for d, at in due
    ]
    if not any(str(a.alert_id) not in state.raised for a in alerts):
        return Outcome(state)
    new = state.evolve()
    return Outcome(new, _keep_new(new.raised, alerts))


def evaluate_trial(trial: TrialState, signal: TrialSignal, cfg: RulesConfig) -> TrialOutcome:
    if signal.event_id in trial.seen:
        return TrialOutcome(trial)
    new = apply_signal(trial, signal, cfg)
    if not enabled(cfg, STOPPING_RULE.rule_id):
        return TrialOutcome(new)
    alerts = [
        to_alert(
            d,
            trial_id=signal.trial_id,
            participant_id=None,
            occurred_at=signal.occurred_at,
            recorded_at=signal.recorded_at,
        )
        for d in STOPPING_RULE.check(new, signal, cfg)
    ]
    return TrialOutcome(new, _keep_new(new.raised, alerts))
