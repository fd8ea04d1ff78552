"""Summary statistics, KDIGO categories and eGFR for the DSMB report. Pure."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date


def ckd_epi_2021(creatinine_mg_dl: float, age_years: int, female: bool) -> float:
    """CKD-EPI 2021 (race-free). The same formula as the rule engine's: services share only
    contracts, so the report, which must state how its eGFR was computed, carries its own."""
    k, a = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / k
    egfr: float = 142 * min(ratio, 1.0) ** a * max(ratio, 1.0) ** -1.200 * 0.9938**age_years
    return egfr * 1.012 if female else egfr


def age_at(birth: date | None, age_at_enrolment: int | None, enrolled: date | None,
           on: date) -> int | None:  # fmt: skip
    def years(a: date, b: date) -> int:
        return b.year - a.year - ((b.month, b.day) < (a.month, a.day))

    if birth is not None:
        return years(birth, on)
    if age_at_enrolment is None or enrolled is None:
        return None
    return age_at_enrolment + max(0, years(enrolled, on))


def g_category(egfr: float) -> str:
    for bound, name in ((90, "G1"), (60, "G2"), (45, "G3a"), (30, "G3b"), (15, "G4")):
        if egfr >= bound:
            return name
    return "G5"


def a_category(uacr_mg_g: float) -> str:
    return "A1" if uacr_mg_g < 30 else "A2" if uacr_mg_g <= 300 else "A3"


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    sd: float | None
    median: float | None
    q1: float | None
    q3: float | None


def summarise(values: list[float]) -> Summary:
    if not values:
        return Summary(0, None, None, None, None, None)
    ordered = sorted(values)
    sd = statistics.stdev(ordered) if len(ordered) > 1 else None
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return Summary(len(ordered), statistics.fmean(ordered), sd, statistics.median(ordered), q1, q3)
