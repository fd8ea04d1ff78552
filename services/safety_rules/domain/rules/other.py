"""uacr.rise, inflammation.rise, dose.deviation: decided on each lab or dose event."""

from __future__ import annotations

from typing import ClassVar

from contracts import Analyte, ClinicalEvent, DoseAdministered, LabResulted, Severity
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft
from services.safety_rules.domain.state import ParticipantState


def _rise(
    p: ParticipantState, event: ClinicalEvent, analyte: Analyte
) -> tuple[str, float, str, float] | None:
    """(event_id, value, baseline event_id, baseline value) of a numeric result after baseline."""
    if not (isinstance(event, LabResulted) and event.analyte is analyte and event.is_numeric):
        return None
    base = p.baseline(analyte)
    if base is None or base.event_id == str(event.event_id):
        return None
    return str(event.event_id), event.value, base.event_id, base.value


class UacrRise:
    """UACR >= 2x baseline, or a move into KDIGO category A3 (> 300 mg/g) from A1/A2."""

    rule_id: ClassVar[str] = "uacr.rise"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        rise, t = _rise(p, event, Analyte.UACR), cfg.uacr_rise
        if rise is None:
            return []
        event_id, value, base_id, base = rise
        ratio = value / base if base > 0 else float("inf")
        earlier = [x for x in p.numeric(Analyte.UACR) if x.event_id != event_id]
        previous = earlier[-1].value if earlier else base
        into_a3 = value > t.a3_above_mg_g >= previous
        if ratio < t.ratio and not into_a3:
            return []
        why = f"{ratio:.1f}x baseline" if ratio >= t.ratio else "moved into A3"
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.MEDIUM,
                f"UACR {value:.0f} mg/g ({why}; baseline {base:.0f})",
                trigger=event_id,
                evidence=(event_id, base_id),
                thresholds=t.used(),
                facts={
                    "uacr_mg_g": value,
                    "baseline_mg_g": base,
                    "ratio": round(ratio, 3) if base > 0 else None,
                    "into_a3": into_a3,
                },
            )
        ]


class InflammationRise:
    """TNF-alpha >= 2x baseline. No standard threshold exists: a signal, not a verdict."""

    rule_id: ClassVar[str] = "inflammation.rise"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        rise, t = _rise(p, event, Analyte.TNF_ALPHA), cfg.inflammation_rise
        if rise is None:
            return []
        event_id, value, base_id, base = rise
        if base <= 0 or value / base < t.tnf_alpha_ratio:
            return []
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.INFO,
                f"TNF-alpha {value:g} pg/mL is {value / base:.1f}x baseline",
                trigger=event_id,
                evidence=(event_id, base_id),
                thresholds=t.used(),
                facts={
                    "tnf_alpha_pg_ml": value,
                    "baseline_pg_ml": base,
                    "ratio": round(value / base, 3),
                },
            )
        ]


class DoseDeviation:
    """An administered dose outside 1 x 10^6 cells/kg +/- 10%."""

    rule_id: ClassVar[str] = "dose.deviation"
    version: ClassVar[int] = 1

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]:
        t = cfg.dose_deviation
        if not isinstance(event, DoseAdministered):
            return []
        deviation = event.cells_per_kg / t.target_cells_per_kg - 1
        if abs(deviation) <= t.tolerance + 1e-12:
            return []
        return [
            Draft(
                self.rule_id,
                self.version,
                Severity.HIGH,
                f"Dose {event.cells_per_kg:.3g} cells/kg is {deviation:+.0%} off protocol",
                trigger=str(event.event_id),
                evidence=(str(event.event_id),),
                thresholds=t.used(),
                facts={"cells_per_kg": round(event.cells_per_kg), "deviation": round(deviation, 4)},
            )
        ]
