"""The shared clinical kernel, tested once here: every service reads these definitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import NamedTuple

import pytest

from clinical.age import age_on, clinical_date
from clinical.baseline import choose_baseline
from clinical.bounds import Bound, difference, ratio
from clinical.compare import above, at_least, below
from clinical.egfr import ckd_epi_2021, egfr_bound, reported_egfr_stands
from clinical.kdigo import AkiThresholds, a_category, aki_stage, g_category
from clinical.terms import (
    counts_as_related,
    counts_as_unexpected,
    is_fatal,
    is_related,
    seriousness,
)
from contracts import AeOutcome, Expectedness, Relatedness, SeriousnessCriterion, Sex

UTC7 = timezone(timedelta(hours=7))


def test_age_counts_whole_years_in_the_sites_calendar() -> None:
    # 06:00 on the 60th birthday at a UTC+7 site is still the day before in UTC
    sampled = datetime(2026, 3, 2, 6, 0, tzinfo=UTC7)
    assert clinical_date(sampled) == date(2026, 3, 2)
    assert sampled.astimezone(UTC).date() == date(2026, 3, 1)
    assert age_on(clinical_date(sampled), birth_date=date(1966, 3, 2), age_at_enrolment=None,
                  enrolled_on=None) == 60  # fmt: skip
    assert age_on(date(2027, 3, 1), birth_date=None, age_at_enrolment=55,
                  enrolled_on=date(2026, 3, 2)) == 55  # fmt: skip


def test_thresholds_meet_at_exactly_their_value_whatever_the_float_rounding() -> None:
    assert 1.65 / 1.10 < 1.5 and at_least(1.65 / 1.10, 1.5)
    assert 1.65 - 1.35 < 0.3 and at_least(1.65 - 1.35, 0.3)
    assert not above(300.0000000001, 300) and above(300.1, 300)
    assert not below(14.99999999999, 15) and below(14.9, 15)


def test_censored_bounds_prove_only_what_they_say() -> None:
    assert Bound.of(15, "<").proves_below(15) and not Bound.of(15, "<=").proves_below(15)
    assert Bound.of(3000, ">").proves_above(300)
    assert ratio(Bound.of(80), Bound.of(2, "<")).lo == 40  # at least 40x a baseline below 2
    assert not ratio(Bound.of(3), Bound.of(2, "<")).proves_at_least(2)  # 1.5x or 300x: unknown
    assert difference(Bound.of(0.9), Bound.of(0.5, "<")).proves_at_least(0.3)
    assert not difference(Bound.of(0.5, "<"), Bound.of(0.1)).proves_at_least(0.3)
    assert Bound.of(15, "<").text() == "<15" and Bound.of(3000, ">").text() == ">3e+03"


def test_a_censored_creatinine_bounds_the_egfr_the_other_way() -> None:
    high = egfr_bound(Bound.of(5.0, ">"), 50, Sex.MALE)
    assert high.hi == pytest.approx(ckd_epi_2021(5.0, 50, Sex.MALE)) and high.hi_open
    assert high.proves_below(15)
    low = egfr_bound(Bound.of(0.5, "<"), 50, Sex.MALE)
    assert low.lo == pytest.approx(ckd_epi_2021(0.5, 50, Sex.MALE)) and low.hi == float("inf")


def test_a_reported_egfr_stands_unless_a_creatinine_was_taken_in_the_day_before() -> None:
    t = datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert reported_egfr_stands(t, None)
    assert not reported_egfr_stands(t, t) and not reported_egfr_stands(t, t - timedelta(hours=23))
    assert reported_egfr_stands(t, t - timedelta(days=2))


class P(NamedTuple):
    at: datetime
    visit: str | None
    value: float


def test_the_baseline_is_the_baseline_visit_else_the_last_result_before_the_first_dose() -> None:
    d = [datetime(2026, 3, day, tzinfo=UTC) for day in range(1, 10)]
    points = [P(d[0], None, 1.0), P(d[2], None, 1.1), P(d[5], "M1", 1.9)]
    assert choose_baseline(points, d[4]) == points[1]
    assert choose_baseline(points, None) is None
    assert choose_baseline(points, d[4], before=d[3]) is None  # the dose came after that sample
    with_visit = [P(d[0], "baseline", 0.9), *points]
    assert choose_baseline(with_visit, d[4]) == with_visit[0]


def test_kdigo_categories_and_aki_stages() -> None:
    assert [g_category(x) for x in (90, 89.9, 45, 29.9, 14.9)] == ["G1", "G2", "G3a", "G4", "G5"]
    assert [a_category(x) for x in (29.9, 30, 300, 300.1)] == ["A1", "A2", "A2", "A3"]
    t = AkiThresholds()
    assert aki_stage(Bound.of(1.65), None, ratio(Bound.of(1.65), Bound.of(1.10)), t) == 1
    assert aki_stage(Bound.of(2.0), None, ratio(Bound.of(2.0), Bound.of(1.0)), t) == 2
    assert aki_stage(Bound.of(4.0), difference(Bound.of(4.0), Bound.of(3.6)), None, t) == 3
    assert aki_stage(Bound.of(1.2), None, ratio(Bound.of(1.2), Bound.of(1.0)), t) is None


def test_unassessed_fields_count_against_safety_and_death_makes_serious() -> None:
    assert not is_related(Relatedness.NOT_ASSESSED) and counts_as_related(Relatedness.NOT_ASSESSED)
    assert not counts_as_related(Relatedness.UNLIKELY) and counts_as_related(Relatedness.POSSIBLE)
    assert counts_as_unexpected(None) and not counts_as_unexpected(Expectedness.EXPECTED)
    fatal = is_fatal(AeOutcome.FATAL, 5, [])
    assert seriousness(True, [SeriousnessCriterion.HOSPITALIZATION], fatal) == {
        SeriousnessCriterion.HOSPITALIZATION, SeriousnessCriterion.DEATH
    }  # fmt: skip
