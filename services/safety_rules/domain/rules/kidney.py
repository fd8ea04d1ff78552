"""Kidney function rules: creatinine.aki (KDIGO), egfr.decline, egfr.kidney_failure,
egfr.rapid_slope, lab.egfr_mismatch. All read numeric results only (never a censored one)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from contracts import Analyte, ClinicalEvent, LabResulted, Severity
from services.safety_rules.domain.config import EgfrRapidSlope as EgfrRapidSlopeConfig
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft
from services.safety_rules.domain.state import LabPoint, ParticipantState


def _numeric_lab(event: ClinicalEvent, *analytes: Analyte) -> LabResulted | None:
    if isinstance(event, LabResulted) and event.analyte in analytes and event.is_numeric:
        return event
    return None


def _point(p: ParticipantState, event: LabResulted) -> LabPoint:
    """The state's record of this lab (the newest, unless it was a late duplicate)."""
    event_id = str(event.event_id)
    return next(x for x in reversed(p.labs) if x.event_id == event_id)


class CreatinineAki:
    """KDIGO acute kidney injury from serum creatinine.

    Stage 1: a rise >= 0.3 mg/dL over the lowest value in the previous 48 h, or >= 1.5x the
    reference; stage 2: >= 2.0x; stage 3: >= 3.0x, or >= 4.0 mg/dL with either rise. The reference
    is the lowest of the baseline and the results of the previous 7 days (monthly trial visits
    rarely give a 7-day value, so the baseline stands in as the "known" prior value).
    """

    rule_id: ClassVar[str] = "creatinine.aki"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        lab, t = _numeric_lab(event, Analyte.CREATININE), cfg.creatinine_aki
        if lab is None:
            return []
        now = _point(p, lab)
        prior = [
            x
            for x in p.numeric(Analyte.CREATININE)
            if x.occurred_at < now.occurred_at and x.event_id != now.event_id
        ]
        in_48h = [
            x.value
            for x in prior
            if now.occurred_at - x.occurred_at <= timedelta(hours=t.absolute_window_hours)
        ]
        in_7d = [
            x.value
            for x in prior
            if now.occurred_at - x.occurred_at <= timedelta(days=t.ratio_window_days)
        ]
        base = p.baseline(Analyte.CREATININE)
        references = in_7d + ([base.value] if base and base.event_id != now.event_id else [])
        rise = now.value - min(in_48h) if in_48h else 0.0
        ratio = now.value / min(references) if references else 0.0
        by_rise = rise >= t.absolute_rise_mg_dl - 1e-9
        if not (by_rise or ratio >= t.ratio_stage_1):
            return []
        stage = 1
        if ratio >= t.ratio_stage_2:
            stage = 2
        if ratio >= t.ratio_stage_3 or now.value >= t.stage_3_mg_dl:
            stage = 3
        severity = Severity.CRITICAL if stage >= 2 else Severity.HIGH
        evidence = [now.event_id] + (
            [base.event_id] if base and base.event_id != now.event_id else []
        )
        return [
            Draft(
                self.rule_id,
                self.version,
                severity,
                f"Acute kidney injury, KDIGO stage {stage}: creatinine {now.value:.2f} mg/dL",
                trigger=now.event_id,
                evidence=tuple(evidence),
                thresholds=t.used(),
                facts={
                    "stage": stage,
                    "creatinine_mg_dl": round(now.value, 3),
                    "rise_48h_mg_dl": round(rise, 3),
                    "ratio_to_reference": round(ratio, 3),
                },
            )
        ]


def _egfr_now(p: ParticipantState, event: ClinicalEvent) -> tuple[LabPoint, float] | None:
    """The eGFR this event gives (computed from creatinine, or reported when no creatinine)."""
    lab = _numeric_lab(event, Analyte.CREATININE, Analyte.EGFR)
    if lab is None:
        return None
    return p.egfr_of(str(lab.event_id))


class EgfrDecline:
    """eGFR >= 30% below baseline (high), >= 40% (critical)."""

    rule_id: ClassVar[str] = "egfr.decline"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        now, base, t = _egfr_now(p, event), p.baseline_egfr(), cfg.egfr_decline
        if now is None or base is None or now[0].event_id == base[0].event_id:
            return []
        drop = 1 - now[1] / base[1]
        if drop < t.high_drop - 1e-9:
            return []
        severity = Severity.CRITICAL if drop >= t.critical_drop - 1e-9 else Severity.HIGH
        return [
            Draft(
                self.rule_id,
                self.version,
                severity,
                f"eGFR {now[1]:.1f} is {drop:.0%} below baseline {base[1]:.1f}",
                trigger=now[0].event_id,
                evidence=(now[0].event_id, base[0].event_id),
                thresholds=t.used(),
                facts={
                    "egfr": round(now[1], 1),
                    "baseline_egfr": round(base[1], 1),
                    "drop": round(drop, 3),
                },
            )
        ]


class EgfrKidneyFailure:
    """eGFR < 15 mL/min/1.73 m2 (KDIGO G5)."""

    rule_id: ClassVar[str] = "egfr.kidney_failure"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        now, t = _egfr_now(p, event), cfg.egfr_kidney_failure
        if now is None or now[1] >= t.below:
            return []
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL,
                f"Kidney failure range: eGFR {now[1]:.1f}",
                trigger=now[0].event_id,
                evidence=(now[0].event_id,),
                thresholds=t.used(),
                facts={"egfr": round(now[1], 1)},
            )
        ]


def slope_per_year(series: list[tuple[LabPoint, float]]) -> float:
    """Least-squares slope of eGFR against time, in mL/min/1.73 m2 per year."""
    t0 = series[0][0].occurred_at
    xs = [(s[0].occurred_at - t0).total_seconds() / (365.25 * 86400) for s in series]
    ys = [s[1] for s in series]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


class EgfrRapidSlope:
    """A fitted eGFR decline faster than 5 per year from >= 3 results spanning >= 90 days.
    Raised when the slope crosses the threshold, not again while it stays steep."""

    rule_id: ClassVar[str] = "egfr.rapid_slope"
    version: ClassVar[int] = 1

    @staticmethod
    def _steep(series: list[tuple[LabPoint, float]], t: EgfrRapidSlopeConfig) -> bool:
        if len(series) < t.min_results:
            return False
        span = series[-1][0].occurred_at - series[0][0].occurred_at
        if span < timedelta(days=t.min_span_days):
            return False
        return slope_per_year(series) < -t.decline_per_year

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        now, t = _egfr_now(p, event), cfg.egfr_rapid_slope
        if now is None:
            return []
        series = p.egfr_series()
        before = [s for s in series if s[0].event_id != now[0].event_id]
        if not self._steep(series, t) or self._steep(before, t):
            return []
        slope = slope_per_year(series)
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.MEDIUM,
                f"eGFR falling {-slope:.1f} per year over {len(series)} results",
                trigger=now[0].event_id,
                evidence=tuple(s[0].event_id for s in series),
                thresholds=t.used(),
                facts={"slope_per_year": round(slope, 2), "results": len(series)},
            )
        ]


class LabEgfrMismatch:
    """A reported eGFR more than 10% away from CKD-EPI 2021 computed from the creatinine of the
    same sample (within a day): a lab using another equation, or a transcription error."""

    rule_id: ClassVar[str] = "lab.egfr_mismatch"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        lab, t = _numeric_lab(event, Analyte.CREATININE, Analyte.EGFR), cfg.lab_egfr_mismatch
        if lab is None:
            return []
        new = _point(p, lab)
        others = p.numeric(
            Analyte.EGFR if lab.analyte is Analyte.CREATININE else Analyte.CREATININE
        )
        window = timedelta(hours=t.same_sample_hours)
        drafts = []
        for other in others:
            if abs(other.occurred_at - new.occurred_at) > window:
                continue
            creat, reported = (new, other) if lab.analyte is Analyte.CREATININE else (other, new)
            computed = p.computed_egfr(creat)
            if computed is None:
                continue
            gap = abs(reported.value - computed) / computed
            if gap > t.tolerance:
                drafts.append(
                    Draft(
                        self.rule_id,
                        self.version,
                        Severity.INFO,
                        f"Reported eGFR {reported.value:.1f} differs {gap:.0%} from "
                        f"CKD-EPI 2021 {computed:.1f}",
                        trigger=reported.event_id,
                        evidence=(reported.event_id, creat.event_id),
                        thresholds=t.used(),
                        facts={
                            "reported_egfr": reported.value,
                            "computed_egfr": round(computed, 1),
                            "difference": round(gap, 3),
                        },
                    )
                )
        return drafts
