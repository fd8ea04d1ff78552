"""sae.reported, susar.clock, ae.severe: decided on each AE report or follow-up.

Every distinct set of seriousness criteria an AE is reported with raises its critical alert once,
so a follow-up that makes an AE serious, fatal or life-threatening, or adds a criterion, raises a
new one; the alert's id depends only on the AE and that set, so arrival order cannot hide one.
Regulatory clocks count from the site's awareness (`aware_at`), else from `recorded_at`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from clinical.terms import (
    GRAVE,
    counts_as_related,
    counts_as_unexpected,
    is_fatal,
    seriousness,
    unassessed,
)
from contracts import AeReported, AeUpdated, SeriousnessCriterion, Severity
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft
from services.safety_rules.domain.state import ParticipantState


def criteria_of(ae: AeReported | AeUpdated) -> frozenset[SeriousnessCriterion]:
    fatal = is_fatal(ae.outcome, ae.ctcae_grade, ae.seriousness_criteria)
    return seriousness(ae.serious, ae.seriousness_criteria, fatal)


def aware(ae: AeReported | AeUpdated) -> datetime:
    return ae.aware_at or ae.recorded_at


def _late(ae: AeReported | AeUpdated, due: datetime) -> str:
    """Said when the report reached us after its deadline had already passed."""
    if ae.recorded_at <= due:
        return ""
    hours = (ae.recorded_at - aware(ae)).total_seconds() / 3600
    return f"; DEADLINE ALREADY PASSED: entered {hours:.0f} h after the site's awareness"


class SaeReported:
    """Any serious AE: the sponsor must know within 24 h of the site's awareness."""

    rule_id: ClassVar[str] = "sae.reported"
    version: ClassVar[int] = 2

    def check(
        self, p: ParticipantState, ae: AeReported | AeUpdated, cfg: RulesConfig
    ) -> list[Draft]:
        t = cfg.sae_reported
        criteria = criteria_of(ae)
        if not criteria:
            return []
        names = sorted(c.value for c in criteria)
        due = aware(ae) + timedelta(hours=t.due_hours)
        open_fields = unassessed(ae.relatedness, ae.expectedness)
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL,
                f"Serious AE: {ae.term} (grade {ae.ctcae_grade}; {', '.join(names)}; outcome "
                f"{ae.outcome.value}){_late(ae, due)}",
                trigger=f"{ae.ae_id}|{'+'.join(names)}",
                evidence=(str(ae.event_id),),
                thresholds=t.used(),
                at=ae.occurred_at,
                due_by=due,
                facts={
                    "ae_id": ae.ae_id,
                    "ctcae_grade": ae.ctcae_grade,
                    "criteria": ", ".join(names),
                    "outcome": ae.outcome.value,
                    "relatedness": ae.relatedness.value,
                    "aware_at": aware(ae).isoformat(),
                    "clock_from": "aware_at" if ae.aware_at else "recorded_at",
                    "deadline_passed_on_entry": ae.recorded_at > due,
                    "unassessed": ", ".join(open_fields) or None,
                },
            )
        ]


class SusarClock:
    """Serious, unexpected and related (possible or stronger): a suspected unexpected serious
    adverse reaction, due to the regulator in 7 days if fatal or life-threatening, else 15.
    Causality or expectedness not yet assessed counts against safety until assessed."""

    rule_id: ClassVar[str] = "susar.clock"
    version: ClassVar[int] = 2

    def check(
        self, p: ParticipantState, ae: AeReported | AeUpdated, cfg: RulesConfig
    ) -> list[Draft]:
        t = cfg.susar_clock
        criteria = criteria_of(ae)
        if not criteria or not counts_as_related(ae.relatedness):
            return []
        if not counts_as_unexpected(ae.expectedness):
            return []
        days = t.fatal_or_life_threatening_days if criteria & GRAVE else t.other_days
        due = aware(ae) + timedelta(days=days)
        open_fields = unassessed(ae.relatedness, ae.expectedness)
        note = f" ({' and '.join(open_fields)} not yet assessed)" if open_fields else ""
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL,
                f"SUSAR: {ae.term}, report within {days} days{note}{_late(ae, due)}",
                trigger=f"{ae.ae_id}|{days}",
                evidence=(str(ae.event_id),),
                thresholds=t.used(),
                at=ae.occurred_at,
                due_by=due,
                facts={
                    "ae_id": ae.ae_id,
                    "clock_days": days,
                    "relatedness": ae.relatedness.value,
                    "expectedness": ae.expectedness.value if ae.expectedness else "not_assessed",
                    "unassessed": ", ".join(open_fields) or None,
                    "aware_at": aware(ae).isoformat(),
                },
            )
        ]


class AeSevere:
    """A CTCAE grade >= 3 AE that is not serious (a serious one raises sae.reported)."""

    rule_id: ClassVar[str] = "ae.severe"
    version: ClassVar[int] = 1

    def check(
        self, p: ParticipantState, ae: AeReported | AeUpdated, cfg: RulesConfig
    ) -> list[Draft]:
        t = cfg.ae_severe
        if criteria_of(ae) or ae.ctcae_grade < t.min_grade:
            return []
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.HIGH,
                f"Severe AE: {ae.term} (grade {ae.ctcae_grade})",
                trigger=f"{ae.ae_id}|{ae.ctcae_grade}",
                evidence=(str(ae.event_id),),
                thresholds=t.used(),
                at=ae.occurred_at,
                facts={"ae_id": ae.ae_id, "ctcae_grade": ae.ctcae_grade},
            )
        ]
