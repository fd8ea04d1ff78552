"""The baseline of a measure: the `baseline` visit result, else the last result before the first
dose (DESIGN). A second dose never moves it. Each comparison reads the baseline as it stood
before the sample it judges, so a result is never compared with a later one."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar


class Timed(Protocol):
    @property
    def at(self) -> datetime: ...

    @property
    def visit(self) -> str | None: ...


P = TypeVar("P", bound=Timed)


def _at(p: Timed) -> datetime:
    return p.at


def choose_baseline(
    points: Sequence[P],
    first_dose_at: datetime | None,
    *,
    before: datetime | None = None,
    baseline_visits: Sequence[P] | None = None,
) -> P | None:
    """The baseline among `points` (in clinical time order): the last `baseline`-visit result,
    else the last result before the first dose, else None.

    With `before`, only what was known by then counts (results and a dose strictly earlier), so
    a sample is judged against the baseline it had when it was taken. `baseline_visits`, the
    baseline-visit subset in time order, may be passed by a caller that keeps it (the engine)."""
    visits = baseline_visits
    if visits is None:
        visits = [p for p in points if p.visit == "baseline"]
    if before is not None:
        visits = visits[: bisect_left(visits, before, key=_at)]
    if visits:
        return visits[-1]
    if first_dose_at is None or (before is not None and first_dose_at >= before):
        return None
    end = bisect_left(points, first_dose_at, key=_at)
    return points[end - 1] if end > 0 else None
