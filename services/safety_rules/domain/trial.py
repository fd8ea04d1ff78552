"""Trial-level state and the DSMB stopping rule, folded from signals of related serious AEs.

Participants live on different partitions, so the participant engine emits a small signal for
each AE and one trial-wide fold (keyed by trial) decides the stopping rule.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts import Severity, alert_id_for
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft


class TrialSignal(BaseModel):
    """What the trial-level rule needs of one AE report or follow-up."""

    model_config = ConfigDict(frozen=True)

    trial_id: str
    participant_id: str
    ae_id: str
    event_id: str
    grade: int
    serious: bool
    related: bool
    fatal: bool
    # causality as reported; not_assessed counts as related until assessed (clinical.terms)
    relatedness: str = ""
    occurred_at: datetime
    recorded_at: datetime


class TrialState(BaseModel):
    seen: set[str] = Field(default_factory=set)
    # participant -> event_ids of their related serious AEs at or above the grade threshold
    severe_related_saes: dict[str, list[str]] = Field(default_factory=dict)
    raised: set[str] = Field(default_factory=set)


class TrialStoppingRule:
    """>= 2 participants with related grade >= 3 SAEs, or any related death: DSMB review."""

    rule_id: ClassVar[str] = "trial.stopping_rule"
    version: ClassVar[int] = 1

    def check(self, trial: TrialState, signal: TrialSignal, cfg: RulesConfig) -> list[Draft]:
        t = cfg.trial_stopping_rule
        drafts = []
        if signal.related and signal.fatal:
            drafts.append(
                Draft(
                    self.rule_id,
                    self.version,
                    Severity.CRITICAL,
                    "Stopping rule: a related death; DSMB review required"
                    + (
                        " (causality not yet assessed: counted as related)"
                        if signal.relatedness == "not_assessed"
                        else ""
                    ),
                    trigger=f"death|{signal.participant_id}|{signal.ae_id}",
                    evidence=(signal.event_id,),
                    thresholds=t.used(),
                    facts={
                        "participant_id": signal.participant_id,
                        "ae_id": signal.ae_id,
                        "relatedness": signal.relatedness or None,
                    },
                )
            )
        count = len(trial.severe_related_saes)
        trigger = f"related_severe_saes>={t.related_severe_sae_participants}"
        if count >= t.related_severe_sae_participants and not self.raised(trial, trigger):
            # (once raised it is the same alert: its evidence, every SAE so far, is not
            # gathered again at each later AE)
            evidence = tuple(e for ids in trial.severe_related_saes.values() for e in ids)
            drafts.append(
                Draft(
                    self.rule_id,
                    self.version,
                    Severity.CRITICAL,
                    f"Stopping rule: {count} participants with related grade >= {t.min_grade} "
                    "SAEs; DSMB review required",
                    trigger=trigger,
                    evidence=evidence,
                    thresholds=t.used(),
                    facts={"participants": count},
                )
            )
        return drafts

    def raised(self, trial: TrialState, trigger: str) -> bool:
        return _trial_alert_id(self.rule_id, trigger) in trial.raised


@lru_cache(maxsize=256)
def _trial_alert_id(rule_id: str, trigger: str) -> str:
    """The id of a trial-level alert (asked at every AE once the rule's count is reached)."""
    return str(alert_id_for(rule_id, None, trigger))


def apply_signal(trial: TrialState, signal: TrialSignal, cfg: RulesConfig) -> TrialState:
    """Folds `signal` into `trial` in place (as the participant fold does: a copy per AE made
    a trial's run quadratic in its AEs) and returns it."""
    trial.seen.add(signal.event_id)
    counts = signal.related and signal.serious and signal.grade >= cfg.trial_stopping_rule.min_grade
    ids = trial.severe_related_saes.setdefault(signal.participant_id, [])
    if counts and signal.event_id not in ids:
        ids.append(signal.event_id)
    if not ids:
        del trial.severe_related_saes[signal.participant_id]
    return trial
