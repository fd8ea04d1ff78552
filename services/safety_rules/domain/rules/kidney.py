"""Kidney function rules: creatinine.aki (KDIGO), egfr.decline, egfr.kidney_failure,
egfr.rapid_slope, lab.egfr_mismatch. Each judges one result at its place in clinical time,
against what was known before it; censored results count where their bound proves the case."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from clinical.bounds import difference, ratio
from clinical.compare import above
from clinical.kdigo import aki_stage
from contracts import Severity
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft, day, shown
from services.safety_rules.domain.series import Fit, Point
from services.safety_rules.domain.state import ParticipantState


def _computed(p: ParticipantState, point: Point) -> tuple[str, ...]:
    """A computed eGFR stands also on the enrolment that gave its sex and age."""
    return (p.enrolment_id,) if point.creatinine is not None and p.enrolment_id else ()


def _upper(p: Point) -> float:
    return p.bound.hi


def _egfr_source(point: Point) -> str:
    if point.creatinine is None:
        return "reported"
    return f"CKD-EPI 2021 from creatinine {point.creatinine.text()} mg/dL"


class CreatinineAki:
    """KDIGO acute kidney injury from serum creatinine.

    Stage 1: a rise >= 0.3 mg/dL over the lowest value in the previous 48 h, or >= 1.5x the
    reference; stage 2: >= 2.0x; stage 3: >= 3.0x, or >= 4.0 mg/dL with either rise. The reference
    is the lowest of the baseline and the results of the previous 7 days (monthly trial visits
    rarely give a 7-day value, so the baseline stands in as the "known" prior value).
    """

    rule_id: ClassVar[str] = "creatinine.aki"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "creatinine"

    def check(self, p: ParticipantState, now: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.creatinine_aki
        series = p.series["creatinine"]
        in_48h, in_7d = series.two_windows_before(now, t.absolute_window, t.ratio_window)
        base = series.baseline(now, p.first_dose_at)
        references = in_7d + ([base] if base is not None and base not in in_7d else [])
        low_48h = min(in_48h, key=_upper) if in_48h else None
        reference = min(references, key=_upper) if references else None
        rise = difference(now.bound, low_48h.bound) if low_48h else None
        times = ratio(now.bound, reference.bound) if reference else None
        stage = aki_stage(now.bound, rise, times, t.staging)
        if stage is None:
            return []
        by_ratio = times is not None and times.proves_at_least(t.ratio_stage_1)
        used = reference if by_ratio else low_48h
        assert used is not None
        why = (
            f"{times.lo:.2f}x the reference {used.bound.text()} mg/dL of {day(used.at)}"
            if by_ratio and times is not None
            else f"up {rise.lo:.2f} mg/dL in 48 h from {used.bound.text()} mg/dL"
            if rise is not None
            else ""
        )
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL if stage >= 2 else Severity.HIGH,
                f"Acute kidney injury, KDIGO stage {stage}: creatinine {now.bound.text()} "
                f"mg/dL on {day(now.at)}, {why}",
                trigger=f"{now.event_id}|stage{stage}",
                evidence=(now.event_id, used.event_id),
                thresholds=t.used(),
                at=now.at,
                facts={
                    "stage": stage,
                    "creatinine_mg_dl": shown(now.bound, 3),
                    "reference_mg_dl": shown(used.bound, 3),
                    "reference_date": day(used.at),
                    "baseline_mg_dl": shown(base.bound, 3) if base else None,
                    "baseline_date": day(base.at) if base else None,
                    "rise_48h_mg_dl": round(rise.lo, 3) if rise else None,
                    "ratio_to_reference": round(times.lo, 3) if times else None,
                },
            )
        ]


class EgfrDecline:
    """eGFR >= 30% below baseline (high), >= 40% (critical)."""

    rule_id: ClassVar[str] = "egfr.decline"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "egfr"

    def check(self, p: ParticipantState, now: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.egfr_decline
        base = p.series["egfr"].baseline(now, p.first_dose_at)
        if base is None:
            return []
        kept = ratio(now.bound, base.bound)  # now / baseline: at most kept.hi
        if not kept.proves_at_most(1 - t.high_drop):
            return []
        critical = kept.proves_at_most(1 - t.critical_drop)
        severity = Severity.CRITICAL if critical else Severity.HIGH
        drop = 1 - kept.hi
        return [
            Draft(
                self.rule_id,
                self.version,
                severity,
                f"eGFR {now.bound.text()} on {day(now.at)} is {drop:.0%} below baseline "
                f"{base.bound.text()} of {day(base.at)}",
                trigger=f"{now.event_id}|{base.event_id}|{severity.value}",
                evidence=(now.event_id, base.event_id, *_computed(p, now)),
                thresholds=t.used(),
                at=now.at,
                facts={
                    "egfr": shown(now.bound),
                    "egfr_source": _egfr_source(now),
                    "baseline_egfr": shown(base.bound),
                    "baseline_date": day(base.at),
                    "baseline_source": _egfr_source(base),
                    "drop_at_least": round(drop, 3),
                },
            )
        ]


class EgfrKidneyFailure:
    """eGFR < 15 mL/min/1.73 m2 (KDIGO G5); a reported `<15` proves it."""

    rule_id: ClassVar[str] = "egfr.kidney_failure"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "egfr"

    def check(self, p: ParticipantState, now: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.egfr_kidney_failure
        if not now.bound.proves_below(t.below):
            return []
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.CRITICAL,
                f"Kidney failure range: eGFR {now.bound.text()} on {day(now.at)} "
                f"({_egfr_source(now)})",
                trigger=now.event_id,
                evidence=(now.event_id, *_computed(p, now)),
                thresholds=t.used(),
                at=now.at,
                facts={"egfr": shown(now.bound), "egfr_source": _egfr_source(now)},
            )
        ]


class EgfrRapidSlope:
    """A fitted eGFR decline faster than 5 per year from >= 3 exact results spanning >= 90
    days. Raised where the fit first turns steep, not again while it stays steep."""

    rule_id: ClassVar[str] = "egfr.rapid_slope"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "egfr"

    def check(self, p: ParticipantState, now: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.egfr_rapid_slope
        if not now.bound.exact:
            return []
        series = p.series["egfr"]
        fit = series.fit_through(now)

        def steep(f: Fit, at: datetime) -> bool:
            return (
                f.n >= t.min_results
                and f.first is not None
                and at - f.first >= timedelta(days=t.min_span_days)
                and above(-f.slope_per_year, t.decline_per_year)
            )

        previous = series.previous(now)
        if not steep(fit, now.at) or (
            previous is not None and steep(series.fit_before(now), previous.at)
        ):
            return []
        fitted = [x.event_id for x in series.points[: series.points.index(now) + 1]
                  if x.bound.exact]  # fmt: skip
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.MEDIUM,
                f"eGFR falling {-fit.slope_per_year:.1f} per year over {fit.n} results "
                f"to {day(now.at)}",
                trigger=now.event_id,
                evidence=tuple(fitted),
                thresholds=t.used(),
                at=now.at,
                facts={"slope_per_year": round(fit.slope_per_year, 2), "results": fit.n},
            )
        ]


class LabEgfrMismatch:
    """A reported eGFR more than 10% away from CKD-EPI 2021 computed from the creatinine of the
    same sample (within a day): a lab using another equation, or a transcription error."""

    rule_id: ClassVar[str] = "lab.egfr_mismatch"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "reported_egfr"

    def check(self, p: ParticipantState, reported: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.lab_egfr_mismatch
        if not reported.bound.exact:
            return []
        window = timedelta(hours=t.same_sample_hours)
        drafts = []
        for creat in p.series["creatinine"].between(reported.at - window, reported.at + window):
            computed = p.egfr_point(creat)
            if computed is None or not computed.bound.exact or computed.bound.lo <= 0:
                continue
            value = computed.bound.lo
            gap = abs(reported.bound.lo - value) / value
            if not above(gap, t.tolerance):
                continue
            drafts.append(
                Draft(
                    self.rule_id,
                    self.version,
                    Severity.INFO,
                    f"Reported eGFR {reported.bound.lo:.1f} on {day(reported.at)} differs "
                    f"{gap:.0%} from CKD-EPI 2021 {value:.1f} (creatinine "
                    f"{creat.bound.text()} mg/dL)",
                    trigger=f"{reported.event_id}|{creat.event_id}",
                    evidence=(reported.event_id, creat.event_id, *_computed(p, computed)),
                    thresholds=t.used(),
                    at=reported.at,
                    facts={
                        "reported_egfr": reported.bound.lo,
                        "computed_egfr": round(value, 1),
                        "creatinine_mg_dl": shown(creat.bound, 3),
                        "difference": round(gap, 3),
                    },
                )
            )
        return drafts
