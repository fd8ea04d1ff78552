"""CKD-EPI 2021 (race-free) eGFR, and a participant's age in whole years at a date."""

from __future__ import annotations

from datetime import date

from contracts import Sex


def ckd_epi_2021(creatinine_mg_dl: float, age_years: int, sex: Sex) -> float:
    """eGFR in mL/min/1.73 m2: 142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x 0.9938^age [x 1.012 F].

    Inker et al., NEJM 2021; k = 0.7 (F) / 0.9 (M), a = -0.241 (F) / -0.302 (M).
    """
    female = sex is Sex.FEMALE
    k, a = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / k
    egfr: float = 142 * min(ratio, 1.0) ** a * max(ratio, 1.0) ** -1.200 * 0.9938**age_years
    return egfr * 1.012 if female else egfr


def whole_years(born: date, on: date) -> int:
    """Completed years of age on a date (a birthday on `on` counts)."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
