"""sae.reported, susar.clock, ae.severe: decided on each AE report or follow-up."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from contracts import AeReported, AeUpdated, ClinicalEvent, SeriousnessCriterion, Severity
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft
from services.safety_rules.domain.state import ParticipantState


def _ae(event: ClinicalEvent) -> AeReported | AeUpdated | None:
    return event if isinstance(event, AeReported | AeUpdated) else None


class SaeReported:
    """Any serious AE, new or made serious by a follow-up: the sponsor must know within 24 h of
    the site's awareness (the event's recorded_at)."""

    rule_id: ClassVar[str] = "sae.reported"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        ae, t = _ae(event), cfg.sae_reported
        if ae is None or not ae.serious:
            return []
        criteria = ", ".join(c.value for c in ae.seriousness_criteria)
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL,
                f"Serious AE: {ae.term} (grade {ae.ctcae_grade}; {criteria})",
                trigger=ae.ae_id,
                evidence=(str(ae.event_id),),
                thresholds=t.used(),
                facts={
                    "ae_id": ae.ae_id,
                    "ctcae_grade": ae.ctcae_grade,
                    "relatedness": ae.relatedness.value,
                },
                due_by=ae.recorded_at + timedelta(hours=t.due_hours),
            )
        ]


class SusarClock:
    """Serious, unexpected and related (possible or stronger): a suspected unexpected serious
    adverse reaction, due to the regulator in 7 days if fatal or life-threatening, else 15."""

    rule_id: ClassVar[str] = "susar.clock"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        ae, t = _ae(event), cfg.susar_clock
        if ae is None or not (ae.serious and ae.is_related):
            return []
        if ae.expectedness is None or ae.expectedness.value != "unexpected":
            return []
        grave = (
            ae.outcome.value == "fatal"
            or SeriousnessCriterion.DEATH in ae.seriousness_criteria
            or SeriousnessCriterion.LIFE_THREATENING in ae.seriousness_criteria
        )
        days = t.fatal_or_life_threatening_days if grave else t.other_days
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL,
                f"SUSAR: {ae.term}, report within {days} days",
                trigger=f"{ae.ae_id}|{days}",
                evidence=(str(ae.event_id),),
                thresholds=t.used(),
                facts={"ae_id": ae.ae_id, "clock_days": days},
                due_by=ae.recorded_at + timedelta(days=days),
            )
        ]


class AeSevere:
    """A CTCAE grade >= 3 AE that is not serious (a serious one raises sae.reported)."""

    rule_id: ClassVar[str] = "ae.severe"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        ae, t = _ae(event), cfg.ae_severe
        if ae is None or ae.serious or ae.ctcae_grade < t.min_grade:
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
                facts={"ae_id": ae.ae_id, "ctcae_grade": ae.ctcae_grade},
            )
        ]
