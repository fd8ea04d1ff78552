"""Protocol visits by study day: the windows every service reads (DESIGN, "Safety rules").

Days count from the first dose (the protocol's one injection; a second never moves the anchor),
on the site's calendar: the dose day is day 0, M1 is day 30 +/- 7, M3 91, M6 182, M9 273 and
M12 365, each +/- 14. `visit.overdue` raises when a window closes with no visit; the DSMB report
assigns each result to the visit whose window holds its date (the label is a hint, the date
decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

# visit -> (target day after the dose, +/- days)
PROTOCOL_WINDOWS: dict[str, tuple[int, int]] = {
    "M1": (30, 7),
    "M3": (91, 14),
    "M6": (182, 14),
    "M9": (273, 14),
    "M12": (365, 14),
}


def study_day(on: date, first_dose_on: date) -> int:
    """Whole days from the first dose to a sample, both dates at the site (clinical.age's
    clinical_date of each time as the site wrote it): the dose day is day 0."""
    return (on - first_dose_on).days


def visit_for_day(
    day: int,
    windows: Mapping[str, tuple[int, int]] = PROTOCOL_WINDOWS,
    hint: str | None = None,
) -> str | None:
    """The visit whose window holds `day`: nearest its target when windows overlap, the labelled
    visit (`hint`) when two are equally near, else the earlier; None outside every window."""
    holding = [
        (abs(day - target), visit != hint, target, visit)
        for visit, (target, tolerance) in windows.items()
        if abs(day - target) <= tolerance
    ]
    return min(holding)[3] if holding else None
