"""uacr.rise, inflammation.rise (judged at each result), dose.deviation and dose.repeat."""

from __future__ import annotations

from typing import ClassVar

from clinical.bounds import ratio
from clinical.specimen import PRECISION, minute
from contracts import Severity
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft, day, shown
from services.safety_rules.domain.series import Point
from services.safety_rules.domain.state import ParticipantState


class UacrRise:
    """UACR >= 2x baseline, or a move into KDIGO category A3 (> 300 mg/g) from a value in A1/A2,
    with or without a baseline."""

    rule_id: ClassVar[str] = "uacr.rise"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "uacr"

    def check(self, p: ParticipantState, now: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.uacr_rise
        series = p.series["uacr"]
        base = series.baseline(now, p.first_dose_at)
        times = ratio(now.bound, base.bound) if base is not None else None
        doubled = times is not None and times.proves_at_least(t.ratio)
        previous = series.previous(now)
        into_a3 = (
            previous is not None
            and now.bound.proves_above(t.a3_above_mg_g)
            and previous.bound.proves_at_most(t.a3_above_mg_g)
        )
        if not (doubled or into_a3):
            return []
        why = []
        if doubled and base is not None and times is not None:
            why.append(f"{times.lo:.1f}x baseline {base.bound.text()} of {day(base.at)}")
        if into_a3 and previous is not None:
            why.append(f"into A3 from {previous.bound.text()} on {day(previous.at)}")
        cited = [x for x in (base if doubled else None, previous if into_a3 else None) if x]
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.MEDIUM,
                f"UACR {now.bound.text()} mg/g on {day(now.at)}: {'; '.join(why)}",
                trigger=f"{now.event_id}|{base.event_id if doubled and base else '-'}",
                evidence=(now.event_id, *dict.fromkeys(x.event_id for x in cited)),
                thresholds=t.used(),
                at=now.at,
                facts={
                    "uacr_mg_g": shown(now.bound),
                    "baseline_mg_g": shown(base.bound) if base else None,
                    "baseline_date": day(base.at) if base else None,
                    "ratio_at_least": round(times.lo, 3) if times else None,
                    "previous_mg_g": shown(previous.bound) if previous else None,
                    "into_a3": into_a3,
                },
            )
        ]


class InflammationRise:
    """TNF-alpha >= 2x baseline. No standard threshold exists: a signal, not a verdict.
    A censored baseline (`<2`) serves where its bound proves the ratio."""

    rule_id: ClassVar[str] = "inflammation.rise"
    version: ClassVar[int] = 2
    measure: ClassVar[str] = "tnf_alpha"

    def check(self, p: ParticipantState, now: Point, cfg: RulesConfig) -> list[Draft]:
        t = cfg.inflammation_rise
        base = p.series["tnf_alpha"].baseline(now, p.first_dose_at)
        if base is None:
            return []
        times = ratio(now.bound, base.bound)
        if not times.proves_at_least(t.tnf_alpha_ratio):
            return []
        at_least = "" if now.bound.exact and base.bound.exact else "at least "
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.INFO,
                f"TNF-alpha {now.bound.text()} pg/mL on {day(now.at)} is {at_least}"
                f"{times.lo:.1f}x baseline {base.bound.text()} of {day(base.at)}",
                trigger=f"{now.event_id}|{base.event_id}",
                evidence=(now.event_id, base.event_id),
                thresholds=t.used(),
                at=now.at,
                facts={
                    "tnf_alpha_pg_ml": shown(now.bound, 2),
                    "baseline_pg_ml": shown(base.bound, 2),
                    "baseline_date": day(base.at),
                    "ratio_at_least": round(times.lo, 3),
                },
            )
        ]


class DoseDeviation:
    """An administered dose outside 1 x 10^6 cells/kg +/- 10%."""

    rule_id: ClassVar[str] = "dose.deviation"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, cfg: RulesConfig) -> list[Draft]:
        t = cfg.dose_deviation
        drafts = []
        for dose in p.doses:
            deviation = dose.cells_per_kg / t.target_cells_per_kg - 1
            if abs(deviation) <= t.tolerance + 1e-12:
                continue
            drafts.append(
                Draft(
                    self.rule_id,
                    self.version,
                    Severity.HIGH,
                    f"Dose {dose.cells_per_kg:.3g} cells/kg on {day(dose.at)} is "
                    f"{deviation:+.0%} off protocol",
                    trigger=dose.event_id,
                    evidence=(dose.event_id,),
                    thresholds=t.used(),
                    at=dose.at,
                    facts={
                        "cells_per_kg": round(dose.cells_per_kg),
                        "deviation": round(deviation, 4),
                    },
                )
            )
        return drafts


class DoseRepeat:
    """A second dose.administered: the protocol gives one injection. The baseline stays the one
    before the first dose and the visit windows stay anchored on it."""

    rule_id: ClassVar[str] = "dose.repeat"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, cfg: RulesConfig) -> list[Draft]:
        first = p.first_dose
        if first is None:
            return []
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.HIGH,
                f"Second dose on {day(dose.at)}: the protocol gives one injection (first on "
                f"{day(first.at)})",
                trigger=dose.event_id,
                evidence=(dose.event_id, first.event_id),
                thresholds=cfg.dose_repeat.used(),
                at=dose.at,
                facts={"first_dose_date": day(first.at), "doses": len(p.doses)},
            )
            for dose in p.doses[1:]
        ]


class LabDiscrepancy:
    """Two copies of one specimen (participant, analyte, collection minute; any route) with
    values that differ beyond the analyte's reporting precision (clinical.specimen): info, for
    the data manager. Both are kept; the worse value stands until a correction settles it."""

    rule_id: ClassVar[str] = "lab.discrepancy"
    version: ClassVar[int] = 1

    def draft(self, analyte: str, before: Point, copy: Point, standing: Point) -> Draft:
        taken = minute(copy.at).isoformat()
        return Draft(
            self.rule_id,
            self.version,
            Severity.INFO,
            f"Two {analyte} results for one sample of {taken}: {before.bound.text()} and "
            f"{copy.bound.text()}; the worse stands until corrected",
            trigger=f"{analyte}|{taken}|{copy.event_id}",
            evidence=(before.event_id, copy.event_id),
            thresholds={"precision": PRECISION.get(analyte)},
            facts={
                "analyte": analyte,
                "collected_at": taken,
                "first_value": shown(before.bound, 3),
                "second_value": shown(copy.bound, 3),
                "standing_event_id": standing.event_id,
            },
            at=copy.at,
        )
