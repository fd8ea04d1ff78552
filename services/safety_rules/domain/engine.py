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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple

from clinical.terms import counts_as_related, is_fatal
from contracts import (
    AeReported,
    AeUpdated,
    AlertRaised,
    AlertWithdrawn,
    ClinicalEvent,
    Severity,
    Source,
    alert_id_for,
)
from contracts.alerts import ALERT_NAMESPACE, uuid5
from contracts.common import TEXT_MAX, summary
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
    LabDiscrepancy,
    UacrRise,
)
from services.safety_rules.domain.rules.visits import VisitOverdue
from services.safety_rules.domain.series import Point
from services.safety_rules.domain.state import Dirty, ParticipantState, fold, same_specimen
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
LAB_DISCREPANCY = LabDiscrepancy()
ALL_RULE_IDS: tuple[str, ...] = (
    *(r.rule_id for r in AE_RULES),
    *(r.rule_id for r in LAB_RULES),
    *(r.rule_id for r in DOSE_RULES),
    VISIT_OVERDUE.rule_id,
    STOPPING_RULE.rule_id,
    LAB_DISCREPANCY.rule_id,
)
_BY_MEASURE: dict[str, tuple[LabRule, ...]] = {}
for _rule in LAB_RULES:
    _BY_MEASURE[_rule.measure] = (*_BY_MEASURE.get(_rule.measure, ()), _rule)


class Outcome(NamedTuple):
    """What one event did (a named tuple: one is built per event, at a third of a frozen
    dataclass's cost)."""

    state: ParticipantState
    alerts: Sequence[AlertRaised] = ()
    signals: Sequence[TrialSignal] = ()
    withdrawn: Sequence[AlertWithdrawn] = ()
    duplicate: bool = False


@dataclass(frozen=True)
class TrialOutcome:
    state: TrialState
    alerts: list[AlertRaised] = field(default_factory=list)
    changed: bool = False  # the signal was folded in (the state, changed in place, is to keep)


def enabled(cfg: RulesConfig, rule_id: str) -> bool:
    return rule_id in cfg.enabled_rules


def to_alert(
    draft: Draft,
    *,
    trial_id: str,
    participant_id: str | None,
    occurred_at: datetime,
    recorded_at: datetime,
    alert_id: uuid.UUID | None = None,  # alert_id_for(...) of these, when the caller has it
) -> AlertRaised:
    alert_id = alert_id or alert_id_for(draft.rule_id, participant_id, draft.trigger)
    return AlertRaised(
        event_id=uuid5(ALERT_NAMESPACE, f"raised|{alert_id}"),
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
        title=summary(draft.title),  # a summary: never a reason to refuse an alert
        evidence=list(draft.evidence),  # validated (to UUIDs) by the contract, in its core
        due_by=draft.due_by,
        thresholds=draft.thresholds,
        facts=draft.facts,
    )


ENGINE_FAILED = "engine.failed"  # always on: not a clinical rule and not configurable
ENGINE_FAILED_VERSION = 1


def engine_failed(event: ClinicalEvent, error: str) -> AlertRaised:
    """The critical alert raised in place of whatever `event` should have raised when the engine
    failed on it (`error`: the exception's class name): a person must look at the event (its
    dead letter keeps it). It names the participant, the event and the error's class, nothing
    of the event's free text; the same failure on a replay gives the same bytes."""
    draft = Draft(
        ENGINE_FAILED,
        ENGINE_FAILED_VERSION,
        Severity.CRITICAL,
        f"The rules engine failed on a {event.event_type} ({error}): review the event by hand",
        trigger=str(event.event_id),
        evidence=(str(event.event_id),),
        thresholds={},
        facts={"event_type": event.event_type, "error": error},
    )
    return to_alert(
        draft,
        trial_id=event.trial_id,
        participant_id=event.participant_id,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
    )


def _drafts(state: ParticipantState, dirty: Dirty, cfg: RulesConfig) -> list[Draft]:
    """Every rule at every dirty place, in clinical order (so alerts come out in it too)."""
    out: list[Draft] = []
    if dirty.discrepancies and enabled(cfg, LAB_DISCREPANCY.rule_id):
        for analyte, before, copy in dirty.discrepancies:
            measure = "reported_egfr" if analyte == "egfr" else analyte
            standing = same_specimen(state, measure, copy) or copy
            out.append(LAB_DISCREPANCY.draft(analyte, before, copy, standing))
    if dirty.ae is not None:
        out += [
            d for r in AE_RULES if enabled(cfg, r.rule_id) for d in r.check(state, dirty.ae, cfg)
        ]
    if dirty.doses:
        out += [d for r in DOSE_RULES if enabled(cfg, r.rule_id) for d in r.check(state, cfg)]
        if state.last_tick is not None and enabled(cfg, VISIT_OVERDUE.rule_id):
            out += [d for d, _ in VISIT_OVERDUE.due(state, state.last_tick, cfg)]
    lab_rules = _lab_rules(cfg)
    for measure, points in dirty.points.items():
        rules = lab_rules.get(measure)
        if not rules:
            continue
        line = state.series[measure].by_id
        for dirty_point in (
            points.values() if len(points) == 1 else sorted(points.values(), key=_key)
        ):
            point = line.get(dirty_point.event_id)  # as it stands on the line, if still there
            if point is not None:
                out += _judge(state, measure, point, rules, cfg)
    return out


def _key(p: Point) -> tuple[datetime, str]:
    return p.key


_LAB_RULES_ON: dict[frozenset[str], dict[str, tuple[LabRule, ...]]] = {}


def _lab_rules(cfg: RulesConfig) -> dict[str, tuple[LabRule, ...]]:
    """The enabled lab rules by measure (asked at every result judged; a handful of configs)."""
    on = cfg.enabled_rules
    found = _LAB_RULES_ON.get(on)
    if found is None:
        found = _LAB_RULES_ON[on] = {
            m: tuple(r for r in rules if r.rule_id in on) for m, rules in _BY_MEASURE.items()
        }
    return found


def _judge(
    state: ParticipantState,
    measure: str,
    point: Point,
    rules: Sequence[LabRule],
    cfg: RulesConfig,
) -> list[Draft]:
    """`rules` (the enabled lab rules of `measure`) at one result on that measure's line."""
    out: list[Draft] = []
    for r in rules:
        found = r.check(state, point, cfg)
        if found:  # (most results raise nothing: nothing more is built for them)
            out += _identified(state, measure, point.event_id, found)
    return out


def _identified(
    state: ParticipantState, measure: str, event_id: str, drafts: list[Draft]
) -> list[Draft]:
    """A lab alert is its rule on its evidence: a correction that withdraws it (it cites the
    corrected result) can never be undone by later data under the same id."""
    return [
        replace(d, site=(measure, event_id), trigger=f"{d.trigger}|{_cited(state, d)}")
        for d in drafts
    ]


def _cited(state: ParticipantState, d: Draft) -> str:
    """The results an alert stands on (the enrolment, which gives age and sex, is cited but
    re-checked whole when corrected, so it is not part of the identity)."""
    return "+".join(sorted(e for e in d.evidence if e != state.enrolment_id))


def _raise(
    state: ParticipantState,
    drafts: list[tuple[Draft, datetime, datetime]],
    trial_id: str,
    participant_id: str | None,
) -> tuple[list[AlertRaised], set[str]]:
    """The alerts not raised before, from (draft, occurred_at, recorded_at), in clinical order;
    and the ids of every alert the drafts stand for (a withdrawal spares those)."""
    fresh: list[AlertRaised] = []
    produced: set[str] = set()
    for d, occurred_at, recorded_at in sorted(drafts, key=lambda x: x[1]):
        alert_id = alert_id_for(d.rule_id, participant_id, d.trigger)
        key = str(alert_id)
        while key in state.withdrawn:
            # withdrawn by a correction, and now true again (an AE made serious once more):
            # raised anew, under an id derived from the withdrawn one
            d = replace(d, trigger=f"{d.trigger}|again:{key}")
            alert_id = alert_id_for(d.rule_id, participant_id, d.trigger)
            key = str(alert_id)
        produced.add(key)
        if key in state.raised:
            continue
        state.record(key, d.rule_id, list(d.evidence), d.site)
        fresh.append(
            to_alert(
                d,
                trial_id=trial_id,
                participant_id=participant_id,
                occurred_at=occurred_at,
                recorded_at=recorded_at,
                alert_id=alert_id,
            )
        )
    return fresh, produced


def _still_raised(state: ParticipantState, alert_id: str, cfg: RulesConfig) -> bool:
    """Whether the corrected history still raises a lab-rule alert, judged again at its own
    place: its evidence may have been cited before later data moved its verdict onto others."""
    site = state.sites.get(alert_id)
    if site is None:
        return False
    measure, event_id = site
    point = state.series[measure].by_id.get(event_id)
    if point is None:
        return False
    drafts = _judge(state, measure, point, _lab_rules(cfg).get(measure, ()), cfg)
    return any(str(alert_id_for(d.rule_id, state.participant_id, d.trigger)) == alert_id
               for d in drafts)  # fmt: skip


def _withdraw(
    state: ParticipantState, event: ClinicalEvent, produced: set[str], cfg: RulesConfig
) -> list[AlertWithdrawn]:
    """Alerts that cited the corrected event and that the corrected history does not raise."""
    if event.supersedes is None:
        return []
    gone = str(event.supersedes)
    out = []
    for alert_id in state.cited.get(gone, []):
        if alert_id in produced or alert_id in state.withdrawn:
            continue
        if _still_raised(state, alert_id, cfg):
            continue
        state.withdrawn.add(alert_id)
        out.append(
            AlertWithdrawn(
                event_id=uuid5(ALERT_NAMESPACE, f"withdrawn|{alert_id}|{event.event_id}"),
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
                reason=summary(
                    f"its evidence {gone} was corrected by {event.event_id}: {event.reason}",
                    TEXT_MAX,
                ),
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
    dirty = fold(state, event, cfg.reach, event_id)
    if ignored:
        return Outcome(state)
    found = _drafts(state, dirty, cfg)
    if not found and event.supersedes is None and dirty.ae is None:
        return Outcome(state)  # most results: nothing raised, nothing to withdraw or signal
    drafts = [(d, d.at or event.occurred_at, event.recorded_at) for d in found]
    alerts, produced = _raise(state, drafts, event.trial_id, event.participant_id)
    return Outcome(state, alerts, _signal(event), _withdraw(state, event, produced, cfg))


def tick(state: ParticipantState, now: datetime, cfg: RulesConfig) -> Outcome:
    """Time-based rules at `now`. Each alert is stamped with the moment its condition began."""
    if state.last_tick is None or now > state.last_tick:
        state.last_tick = now
    if not enabled(cfg, VISIT_OVERDUE.rule_id) or state.trial_id is None:
        return Outcome(state)
    # stamped with the moment each visit became overdue, so a replay gives the same bytes
    drafts = [(d, at, at) for d, at in VISIT_OVERDUE.due(state, now, cfg)]
    alerts, _ = _raise(state, drafts, state.trial_id, state.participant_id)
    return Outcome(state, alerts)


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
        return TrialOutcome(new, changed=True)
    alerts = [
        to_alert(
            d,
            trial_id=signal.trial_id,
            participant_id=None,
            occurred_at=signal.occurred_at,
            recorded_at=signal.recorded_at,
        )
        for d in STOPPING_RULE.check(new, signal, cfg)
        # one already raised is not built again (a stopping alert cites every AE behind it)
        if str(alert_id_for(d.rule_id, None, d.trigger)) not in new.raised
    ]
    return TrialOutcome(new, _keep_new(new.raised, alerts), changed=True)
