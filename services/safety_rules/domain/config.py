"""Thresholds of every rule. The values live in services/safety_rules/rules.yaml, which a safety
officer can read; this model validates that file and gives each rule its typed slice."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinical.kdigo import AkiThresholds
from clinical.visits import PROTOCOL_WINDOWS


class _Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    enabled: bool = True

    def used(self) -> dict[str, Any]:
        """The thresholds as recorded on an alert (a copy of what was dumped once)."""
        return dict(self._used)

    @cached_property
    def _used(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "enabled"}


class SaeReported(_Thresholds):
    due_hours: float = Field(24, gt=0)


class SusarClock(_Thresholds):
    fatal_or_life_threatening_days: int = Field(7, gt=0)
    other_days: int = Field(15, gt=0)


class AeSevere(_Thresholds):
    min_grade: int = Field(3, ge=1, le=5)


class CreatinineAki(_Thresholds):
    absolute_rise_mg_dl: float = Field(0.3, gt=0)
    absolute_window_hours: float = Field(48, gt=0)
    ratio_stage_1: float = Field(1.5, gt=1)
    ratio_window_days: float = Field(7, gt=0)
    ratio_stage_2: float = Field(2.0, gt=1)
    ratio_stage_3: float = Field(3.0, gt=1)
    stage_3_mg_dl: float = Field(4.0, gt=0)

    # what the rule reads at every creatinine, built once per configuration
    @cached_property
    def staging(self) -> AkiThresholds:
        return AkiThresholds(self.absolute_rise_mg_dl, self.ratio_stage_1, self.ratio_stage_2,
                             self.ratio_stage_3, self.stage_3_mg_dl)  # fmt: skip

    @cached_property
    def absolute_window(self) -> timedelta:
        return timedelta(hours=self.absolute_window_hours)

    @cached_property
    def ratio_window(self) -> timedelta:
        return timedelta(days=self.ratio_window_days)


class EgfrDecline(_Thresholds):
    high_drop: float = Field(0.30, gt=0, lt=1)
    critical_drop: float = Field(0.40, gt=0, lt=1)


class EgfrKidneyFailure(_Thresholds):
    below: float = Field(15, gt=0)


class EgfrRapidSlope(_Thresholds):
    decline_per_year: float = Field(5.0, gt=0)
    min_results: int = Field(3, ge=2)
    # Three results a few weeks apart extrapolate noise into hundreds per year; a slope is only
    # read over at least this span (KDIGO speaks of a sustained decline).
    min_span_days: float = Field(90, ge=0)


class UacrRise(_Thresholds):
    ratio: float = Field(2.0, gt=1)
    a3_above_mg_g: float = Field(300, gt=0)


class InflammationRise(_Thresholds):
    tnf_alpha_ratio: float = Field(2.0, gt=1)


class DoseDeviation(_Thresholds):
    target_cells_per_kg: float = Field(1_000_000, gt=0)
    tolerance: float = Field(0.10, gt=0, lt=1)


class DoseRepeat(_Thresholds):
    """No threshold: the protocol gives one injection, so any second dose is raised."""


class VisitOverdue(_Thresholds):
    # visit -> (target day after the dose, +/- days); the report windows results by the same
    windows: dict[str, tuple[int, int]] = Field(default_factory=lambda: dict(PROTOCOL_WINDOWS))


class TrialStoppingRule(_Thresholds):
    related_severe_sae_participants: int = Field(2, ge=1)
    min_grade: int = Field(3, ge=1, le=5)


class LabEgfrMismatch(_Thresholds):
    tolerance: float = Field(0.10, gt=0, lt=1)
    same_sample_hours: float = Field(24, gt=0)


class LabDiscrepancy(_Thresholds):
    """Two copies of one specimen with different values (clinical.specimen's precision)."""


class RulesConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sae_reported: SaeReported = SaeReported()
    susar_clock: SusarClock = SusarClock()
    ae_severe: AeSevere = AeSevere()
    creatinine_aki: CreatinineAki = CreatinineAki()
    egfr_decline: EgfrDecline = EgfrDecline()
    egfr_kidney_failure: EgfrKidneyFailure = EgfrKidneyFailure()
    egfr_rapid_slope: EgfrRapidSlope = EgfrRapidSlope()
    uacr_rise: UacrRise = UacrRise()
    inflammation_rise: InflammationRise = InflammationRise()
    dose_deviation: DoseDeviation = DoseDeviation()
    dose_repeat: DoseRepeat = DoseRepeat()
    visit_overdue: VisitOverdue = VisitOverdue()
    trial_stopping_rule: TrialStoppingRule = TrialStoppingRule()
    lab_egfr_mismatch: LabEgfrMismatch = LabEgfrMismatch()
    lab_discrepancy: LabDiscrepancy = LabDiscrepancy()

    @cached_property
    def reach(self) -> dict[str, timedelta]:
        """How far after a result, by measure, a rule's window reaches back to it: a result
        entered late is judged again at every later one within this (state.fold)."""
        aki = self.creatinine_aki
        return {"creatinine": max(aki.absolute_window, aki.ratio_window)}

    @cached_property
    def enabled_rules(self) -> frozenset[str]:
        """Ids of the rules switched on (asked for every rule at every event)."""
        return frozenset(
            name.replace("_", ".", 1)
            for name in type(self).model_fields
            if getattr(self, name).enabled
        )
