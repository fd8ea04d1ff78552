"""CKD-EPI 2021 (race-free) eGFR, the one formula every service uses."""

from __future__ import annotations

from datetime import datetime, timedelta

from clinical.bounds import Bound
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


def egfr_bound(creatinine: Bound, age_years: int, sex: Sex) -> Bound:
    """The eGFR a (possibly censored) creatinine proves: a creatinine `>10` proves an eGFR below
    CKD-EPI(10); one `<0.5` proves only a lower bound. eGFR falls as creatinine rises."""

    def f(scr: float) -> float:
        return float("inf") if scr <= 0 else ckd_epi_2021(scr, age_years, sex)

    if creatinine.exact:  # most results: one value, computed once
        value = f(creatinine.lo)
        return Bound(value, value)
    return creatinine.map_decreasing(f)


SAME_SAMPLE = timedelta(days=1)


def reported_egfr_stands(reported_at: datetime, latest_creatinine_at: datetime | None) -> bool:
    """Whether a lab's reported eGFR stands on the eGFR time line: only when no creatinine was
    taken in the day before it (else that sample's eGFR is computed with CKD-EPI 2021, and the
    mismatch rule compares the two). `latest_creatinine_at` is the latest creatinine at or before
    the reported eGFR. Looking back only, so a later creatinine never unsays a judged eGFR."""
    return latest_creatinine_at is None or reported_at - latest_creatinine_at > SAME_SAMPLE
