"""Summary statistics for the DSMB report. Pure. (eGFR, age, baseline and the KDIGO categories
come from the shared clinical kernel, so the report and the alerts cannot disagree.)"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    sd: float | None
    median: float | None
    q1: float | None
    q3: float | None
    minimum: float | None = None
    maximum: float | None = None


def summarise(values: list[float]) -> Summary:
    if not values:
        return Summary(0, None, None, None, None, None)
    ordered = sorted(values)
    sd = statistics.stdev(ordered) if len(ordered) > 1 else None
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return Summary(
        len(ordered),
        statistics.fmean(ordered),
        sd,
        statistics.median(ordered),
        q1,
        q3,
        ordered[0],
        ordered[-1],
    )
