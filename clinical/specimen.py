"""One specimen, one result (DESIGN): the same sample reaching the system by several routes (the
EDC form, the lab's FHIR feed, an SDTM transfer) is one result, whatever its event_id.

A result is identified by participant, analyte and collection instant to the minute. Another
copy with the same value (within the analyte's reporting precision) adds nothing; a copy with
another value is a discrepancy, and until a correction settles it the value worse for the
participant stands (a missed signal is worse than an extra one). The rule engine and the DSMB
report both read these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from clinical.bounds import Bound

# the reporting precision of each analyte, in its canonical unit (contracts.units)
PRECISION = {"creatinine": 0.01, "egfr": 1.0, "uacr": 0.1, "tnf_alpha": 0.1, "il_10": 0.1}
LOWER_IS_WORSE = frozenset({"egfr"})  # a lower eGFR is worse; a higher value of the others

T = TypeVar("T")


def minute(at: datetime) -> datetime:
    """The collection instant to the minute, in UTC: the specimen's time."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def same_value(analyte: str, a: Bound, b: Bound) -> bool:
    """Whether two copies report the same value, within the analyte's reporting precision (a
    censored copy equals only the same bound)."""
    step = PRECISION.get(analyte, 1e-9)
    return (a.lo_open, a.hi_open) == (b.lo_open, b.hi_open) and all(
        x == y or abs(x - y) < step / 2 for x, y in ((a.lo, b.lo), (a.hi, b.hi))
    )


def severity_key(analyte: str, b: Bound) -> tuple[float, float]:
    """Orders bounds from the best to the worse for the participant: by the worst value each
    allows, then by the least it proves."""
    if analyte in LOWER_IS_WORSE:
        return (-b.lo, -b.hi)
    return (b.hi, b.lo)


def worst(analyte: str, copies: Iterable[tuple[T, Bound]]) -> T:
    """The copy that stands while copies disagree: the worse value for the participant (the
    last of equals by position)."""
    return max(enumerate(copies), key=lambda c: (severity_key(analyte, c[1][1]), c[0]))[1][0]
