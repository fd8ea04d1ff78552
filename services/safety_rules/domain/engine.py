"""The engine: fold an event into a participant's state and return what it raises.

    evaluate(state, event, cfg)         -> Outcome(state, alerts, signals, withdrawn)
    tick(state, now, cfg)               -> Outcome(state, alerts)          time-based rules
    evaluate_trial(trial, signal, cfg)  -> TrialOutcome(trial, alerts)     the stopping rule

Arrival order is not clinical order: each event is placed at its `occurred_at`, and every result
whose answer it may change is judged again (state.fold says which), so a late baseline, an
earlier sample entered second or a late dose raises what clinical order would have raised. Only
alerts not raised before are raised: every alert_id is a uuid5 of (rule, participant, trigger),
so judging a result twice is harmless. A correction withdraws the alerts that cited what it
corrected and that the corrected history no longer raises (`alert.withdrawn`, never a deletion).

The cost of an event is that of the results it touches, not of the participant's history.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from clinical.terms import counts_as_related, is_fatal
from contracts import (
    AeReported,
    AeUpdated,
    AlertRaised,
    AlertWithdrawn,
    ClinicalEvent,
    Source,
    alert_id_for,
)
from contracts.alerts import ALERT_NAMESPACE
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.adverse_events import (
    AeSevere,
    SaeReported,
    SusarClock,
    criteria_of,
)
from services.safety_rules.domain.rules.base import AeRule, DoseRule, Draft, LabRule
from services.safety_rules.domain.rules.kidney import (
    CreatinineAki,
    EgfrDecline,
    EgfrKidneyFailure,
    EgfrRapidSlope,
    LabEgfrMismatch,
)
from services.safety_rules.domain.rules.other import (
    DoseDeviation,
    DoseRepeat,
    InflammationRise,
    UacrRise,
)
from services.safety_rules.domain.rules.visits import VisitOverdue
from services.safety_rules.domain.state import Dirty, ParticipantState, fold
from services.safety_rules.domain.trial import (
    TrialSignal,
    TrialState,
    TrialStoppingRule,
    apply_signal,
)

RECORDED_BY = "service:safety_rules"

AE_RULES: tuple[AeRule, ...] = (SaeReported(), SusarClock(), AeSevere())
LAB_RULES: tuple[LabRule, ...] = (
    CreatinineAki(),
    EgfrDecline(),
    EgfrKidneyFailure(),
    EgfrRapidSlope(),
    UacrRise(),
    InflammationRise(),
    LabEgfrMismatch(),
)
DOSE_RULES: tuple[DoseRule, ...] = (DoseDeviation(), DoseRepeat())
VISIT_OVERDUE = VisitOverdue()
STOPPING_RULE = TrialStoppingRule()
ALL_RULE_IDS: tuple[str, ...] = (
    *(r.rule_id for r in AE_RULES),
    *(r.rule_id for r in LAB_RULES),
    *(r.rule_id for r in DOSE_RULES),
    VISIT_OVERDUE.rule_id,
    STOPPING_RULE.rule_id,
)
_BY_MEASURE: dict[str, tuple[LabRule, ...]] = {}
for _rule in LAB_RULES:
    _BY_MEASURE[_rule.measure] = (*_BY_MEASURE.get(_rule.measure, ()), _rule)


@dataclass(frozen=True)
class Outcome:
    state: ParticipantState
    alerts: list[AlertRaised] = field(default_factory=list)
    signals: list[TrialSignal] = field(default_factory=list)
    withdrawn: list[AlertWithdrawn] = field(default_factory=list)
    duplicate: bool = False


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


def _drafts(state: ParticipantState, dirty: Dirty, cfg: RulesConfig) -> list[Draft]:
    """Every rule at every dirty place, in clinical order (so alerts come out in it too)."""
    out: list[Draft] = []
    if dirty.ae is not None:
        out += [
            d for r in AE_RULES if enabled(cfg, r.rule_id) for d in r.check(state, dirty.ae, cfg)
        ]
    if dirty.doses:
        out += [d for r in DOSE_RULES if enabled(cfg, r.rule_id) for d in r.check(state, cfg)]
        if state.last_tick is not None and enabled(cfg, VISIT_OVERDUE.rule_id):
            out += [d for d, _ in VISIT_OVERDUE.due(state, state.last_tick, cfg)]
    for measure, points in dirty.points.items():
        rules = [r for r in _BY_MEASURE.get(measure, ()) if enabled(cfg, r.rule_id)]
        series = state.series[measure]
        for point in sorted(points.values(), key=lambda p: p.key):
            if point.event_id in series.by_id:
                out += [d for r in rules for d in r.check(state, point, cfg)]
    return out


def _raise(
    state: ParticipantState, drafts: list[Draft], event: ClinicalEvent
) -> tuple[list[AlertRaised], set[str]]:
    """The alerts not raised before, and the ids of every alert the drafts stand for."""
    fresh: list[AlertRaised] = []
    produced: set[str] = set()
    for d in sorted(drafts, key=lambda d: d.at or event.occurred_at):
        alert = to_alert(
            d,
            trial_id=event.trial_id,
            participant_id=event.participant_id,
            occurred_at=d.at or event.occurred_at,
            recorded_at=event.recorded_at,
        )
        key = str(alert.alert_id)
        produced.add(key)
        if key not in state.raised:
            state.record(key, d.rule_id, list(d.evidence))
            fresh.append(alert)
    return fresh, produced


def _withdraw(
    state: ParticipantState, event: ClinicalEvent, produced: set[str]
) -> list[AlertWithdrawn]:
    """Alerts that cited the corrected event and that the corrected history does not raise."""
    if event.supersedes is None:
        return []
    gone = str(event.supersedes)
    out = []
    for alert_id in state.cited.get(gone, []):
        if alert_id in produced or alert_id in state.withdrawn:
            continue
        state.withdrawn.add(alert_id)
        out.append(
            AlertWithdrawn(
                event_id=uuid.uuid5(ALERT_NAMESPACE, f"withdrawn|{alert_id}|{event.event_id}"),
                trial_id=event.trial_id,
                participant_id=event.participant_id,
                occurred_at=event.occurred_at,
                recorded_at=event.recorded_at,
                recorded_by=RECORDED_BY,
                source=Source.SAFETY_RULES,
                alert_id=uuid.UUID(alert_id),
                rule_id=state.raised[alert_id],
                withdrawn_by=event.event_id,
                superseded=event.supersedes,
                reason=f"its evidence {gone} was corrected by {event.event_id}: {event.reason}",
            )
        )
    return out


def _signal(event: ClinicalEvent) -> list[TrialSignal]:
    if not isinstance(event, AeReported | AeUpdated):
        return []
    return [
        TrialSignal(
            trial_id=event.trial_id,
            participant_id=event.participant_id,
            ae_id=event.ae_id,
            event_id=str(event.event_id),
            grade=event.ctcae_grade,
            serious=bool(criteria_of(event)),
            related=counts_as_related(event.relatedness),
            fatal=is_fatal(event.outcome, event.ctcae_grade, event.seriousness_criteria),
            relatedness=event.relatedness.value,
            occurred_at=event.occurred_at,
            recorded_at=event.recorded_at,
        )
    ]


def evaluate(state: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> Outcome:
    """Fold `event` into `state` (in place) and return the alerts it raises."""
    event_id = str(event.event_id)
    if event_id in state.seen:
        return Outcome(state, duplicate=True)
    ignored = event_id in state.superseded  # corrected before it arrived: nothing to judge
    dirty = fold(state, event)
    if ignored:
        return Outcome(state)
    alerts, produced = _raise(state, _drafts(state, dirty, cfg), event)
    return Outcome(state, alerts, _signal(event), _withdraw(state, event, produced))


def tick(state: ParticipantState, now: datetime, cfg: RulesConfig) -> Outcome:
    """Time-based rules at `now`. Each alert is stamped with the moment its condition began."""
    if state.last_tick is None or now > state.last_tick:
        state.last_tick = now
    if not enabled(cfg, VISIT_OVERDUE.rule_id) or state.trial_id is None:
        return Outcome(state)
    fresh: list[AlertRaised] = []
    for d, at in VISIT_OVERDUE.due(state, now, cfg):
        alert = to_alert(
            d,
            trial_id=state.trial_id,
            participant_id=state.participant_id,
            occurred_at=at,
            recorded_at=at,
        )
        if str(alert.alert_id) not in state.raised:
            state.record(str(alert.alert_id), d.rule_id, list(d.evidence))
            fresh.append(alert)
    return Outcome(state, fresh)


def _keep_new(raised: set[str], alerts: list[AlertRaised]) -> list[AlertRaised]:
    fresh = []
    for a in alerts:
        if str(a.alert_id) not in raised:
            raised.add(str(a.alert_id))
            fresh.append(a)
    return fresh


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
