"""One measure's results on a clinical time line, kept in order as they arrive in any order.

Insertion keeps (occurred_at, event_id) order with a binary search, so a result in order costs
O(log n) and a late one O(k) for the k results after it (the prefix sums of the fitted slope
are redone from there). Nothing here reads more than the window a rule asks for.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from clinical.baseline import choose_baseline
from clinical.bounds import Bound

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_YEAR_S = 365.25 * 86400
Key = tuple[datetime, str]


class Point(NamedTuple):
    """One result: what it proves (`bound`), when, at which visit. For a computed eGFR,
    `event_id` is the creatinine's and `creatinine` the value it was computed from. (Named
    tuples, as `Fit` and `Bound`: immutable, and cheaper to build than frozen dataclasses.)"""

    event_id: str
    at: datetime
    bound: Bound
    visit: str | None = None
    creatinine: Bound | None = None

    @property
    def key(self) -> Key:
        return (self.at, self.event_id)

    @property
    def years(self) -> float:
        return (self.at - _EPOCH).total_seconds() / _YEAR_S

    def to_json(self) -> list[Any]:
        b, c = self.bound, self.creatinine
        return [
            self.event_id, self.at.isoformat(), b.lo, b.hi, b.lo_open, b.hi_open, self.visit,
            None if c is None else [c.lo, c.hi, c.lo_open, c.hi_open],
        ]  # fmt: skip

    @classmethod
    def from_json(cls, row: list[Any]) -> Point:
        eid, at, lo, hi, lo_open, hi_open, visit, c = row
        return cls(
            eid,
            datetime.fromisoformat(at),
            Bound(lo, hi, lo_open, hi_open),
            visit,
            None if c is None else Bound(*c),
        )


class Fit(NamedTuple):
    """Least-squares sums over the exact results up to a point (censored ones are not fitted)."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    first: datetime | None = None

    def add(self, p: Point) -> Fit:
        if not p.bound.exact:
            return self
        x, y = p.years, p.bound.lo
        return Fit(self.n + 1, self.sx + x, self.sy + y, self.sxx + x * x, self.sxy + x * y,
                   self.first or p.at)  # fmt: skip

    @property
    def slope_per_year(self) -> float:
        denominator = self.n * self.sxx - self.sx * self.sx
        if self.n < 2 or denominator <= 1e-12:
            return 0.0
        return (self.n * self.sxy - self.sx * self.sy) / denominator


class Series:
    """Results of one measure in clinical order, with the baseline-visit subset and, when
    `fitted` (the eGFR line: the slope rule reads it), the least-squares sums up to each."""

    __slots__ = ("_fits", "baseline_visits", "by_id", "fitted", "keys", "points")

    def __init__(self, points: list[Point] | None = None, *, fitted: bool = False) -> None:
        self.points: list[Point] = []
        self.keys: list[Key] = []
        self.by_id: dict[str, Point] = {}
        self.baseline_visits: list[Point] = []
        self.fitted = fitted
        self._fits: list[Fit] = []
        if points:
            for p in sorted(points, key=lambda p: p.key):
                self.insert(p)

    def __len__(self) -> int:
        return len(self.points)

    def insert(self, p: Point) -> None:
        if p.event_id in self.by_id:
            return
        key = p.key
        i = bisect_left(self.keys, key)
        self.points.insert(i, p)
        self.keys.insert(i, key)
        self.by_id[p.event_id] = p
        if p.visit == "baseline":
            j = bisect_left([b.key for b in self.baseline_visits], p.key)
            self.baseline_visits.insert(j, p)
        self._refit(i)

    def remove(self, event_id: str) -> Point | None:
        p = self.by_id.pop(event_id, None)
        if p is None:
            return None
        i = bisect_left(self.keys, p.key)
        del self.points[i], self.keys[i]
        if p.visit == "baseline":
            self.baseline_visits.remove(p)
        self._refit(i)
        return p

    def _refit(self, i: int) -> None:
        if not self.fitted:
            return
        del self._fits[i:]
        fit = self._fits[-1] if self._fits else Fit()
        for p in self.points[i:]:
            fit = fit.add(p)
            self._fits.append(fit)

    # -- reads ---------------------------------------------------------------------------------
    def fit_through(self, p: Point) -> Fit:
        """The fit over the exact results up to and including `p`."""
        self._require_fit()
        return self._fits[bisect_left(self.keys, p.key)]

    def fit_before(self, p: Point) -> Fit:
        self._require_fit()
        i = bisect_left(self.keys, p.key)
        return self._fits[i - 1] if i else Fit()

    def _require_fit(self) -> None:
        if not self.fitted:
            raise ValueError("this series keeps no fit: build it with fitted=True")

    def after(self, key: Key) -> list[Point]:
        return self.points[bisect_right(self.keys, key) :]

    def between(self, start: datetime, end: datetime) -> list[Point]:
        """Results with start <= occurred_at <= end."""
        i = bisect_left(self.keys, (start, ""))
        j = bisect_right(self.keys, (end, "\uffff"))
        return self.points[i:j]

    def before_within(self, p: Point, span: timedelta) -> list[Point]:
        """Results earlier than `p` (in clinical order) by at most `span`."""
        i = bisect_left(self.keys, (p.at - span, ""))
        j = bisect_left(self.keys, p.key)
        return self.points[i:j]

    def two_windows_before(
        self, p: Point, short: timedelta, long: timedelta
    ) -> tuple[list[Point], list[Point]]:
        """`before_within(p, short)` and `before_within(p, long)`, with one search for `p`."""
        keys, at = self.keys, p.at
        j = bisect_left(keys, p.key)
        if not j:
            return [], []
        i_short = bisect_left(keys, (at - short, ""), 0, j)
        i_long = bisect_left(keys, (at - long, ""), 0, j)
        return self.points[i_short:j], self.points[i_long:j]

    def previous(self, p: Point) -> Point | None:
        i = bisect_left(self.keys, p.key)
        return self.points[i - 1] if i else None

    def latest_at_or_before(self, at: datetime) -> Point | None:
        i = bisect_right(self.keys, (at, "\uffff"))
        return self.points[i - 1] if i else None

    def next_after(self, key: Key) -> Point | None:
        i = bisect_right(self.keys, key)
        return self.points[i] if i < len(self.points) else None

    def baseline(self, p: Point, first_dose_at: datetime | None) -> Point | None:
        """The baseline `p` is judged against: known before it was taken (clinical.baseline)."""
        return choose_baseline(
            self.points, first_dose_at, before=p.at, baseline_visits=self.baseline_visits
        )
