from __future__ import annotations

from datetime import date

import pytest

from clinical.age import whole_years
from clinical.egfr import ckd_epi_2021
from contracts import Sex


@pytest.mark.parametrize(
    ("scr", "age", "sex", "expected"),
    # the worked examples of DESIGN.md
    [(1.0, 50, Sex.MALE, 91.7), (1.0, 50, Sex.FEMALE, 68.6), (2.5, 60, Sex.MALE, 28.7)],
)
def test_ckd_epi_2021_matches_published_values(
    scr: float, age: int, sex: Sex, expected: float
) -> None:
    assert ckd_epi_2021(scr, age, sex) == pytest.approx(expected, abs=0.1)


def test_age_is_whole_years_at_the_sample_date() -> None:
    assert whole_years(date(1970, 6, 15), date(2026, 6, 14)) == 55
    assert whole_years(date(1970, 6, 15), date(2026, 6, 15)) == 56
