"""The time line a measure's results sit on: the fit the slope rule reads, kept only where it is
read, and the windows the AKI rule reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clinical.bounds import Bound
from services.safety_rules.domain.series import Point, Series
from services.safety_rules.domain.state import FITTED, ParticipantState

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def point(i: int, day: float, value: float, comparator: str | None = None) -> Point:
    return Point(f"e{i}", T0 + timedelta(days=day), Bound.of(value, comparator))


def test_the_fit_follows_late_results_and_removals_and_skips_censored_ones() -> None:
    s = Series(fitted=True)
    for p in (point(1, 0, 60), point(3, 180, 50), point(2, 90, 56), point(4, 120, 15, "<")):
        s.insert(p)  # e2 arrives after e3; e4 is censored
    s.remove("e3")
    fit = s.fit_through(s.by_id["e4"])
    # exact results left: (0 d, 60) and (90 d, 56): 4 lost over 90 days is -16.2 a year
    assert fit.n == 2
    assert fit.slope_per_year == pytest.approx(-4 / (90 / 365.25))
    assert s.fit_before(s.by_id["e2"]).n == 1


def test_only_the_egfr_line_keeps_a_fit_and_a_series_without_one_refuses_to_answer() -> None:
    assert {"egfr"} == FITTED
    state = ParticipantState()
    assert [m for m, s in state.series.items() if s.fitted] == ["egfr"]
    restored = ParticipantState.from_json(state.to_json())
    assert [m for m, s in restored.series.items() if s.fitted] == ["egfr"]
    s = Series([point(1, 0, 1.0)])
    with pytest.raises(ValueError, match="fitted=True"):
        s.fit_through(s.by_id["e1"])


def test_the_two_windows_before_a_result_are_the_two_single_windows() -> None:
    s = Series([point(i, day, 1.0) for i, day in enumerate((0, 3, 5.5, 6, 6.9, 7, 7))])
    for now in s.points:
        for short, long in ((timedelta(hours=48), timedelta(days=7)), (timedelta(0), timedelta(1))):
            assert s.two_windows_before(now, short, long) == (
                s.before_within(now, short),
                s.before_within(now, long),
            )
    last = s.points[-1]  # e6 at day 7: 48 h back is day 5; e5, also at day 7, is before it
    assert [
        p.event_id for p in s.two_windows_before(last, timedelta(hours=48), timedelta(7))[0]
    ] == [
        "e2",
        "e3",
        "e4",
        "e5",
    ]
