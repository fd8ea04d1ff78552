"""A participant's age: whole years at the clinical date of a sample.

The clinical date is the date at the site, as the site wrote the time (`2026-03-02T06:00+07:00`
is 2 March at that site, though 1 March in UTC): birthdays are kept in the site's calendar.
"""

from __future__ import annotations

from datetime import date, datetime


def clinical_date(at: datetime) -> date:
    """The calendar date at the site of a time recorded with the site's offset."""
    return at.date()


def whole_years(born: date, on: date) -> int:
    """Completed years of age on a date (a birthday on `on` counts)."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_on(
    day: date,
    *,
    birth_date: date | None,
    age_at_enrolment: int | None,
    enrolled_on: date | None,
) -> int | None:
    """Whole years at `day`: from the birth date, else from the age given at enrolment plus the
    whole years since; None when neither is known."""
    if birth_date is not None:
        return whole_years(birth_date, day)
    if age_at_enrolment is None or enrolled_on is None:
        return None
    return age_at_enrolment + max(0, whole_years(enrolled_on, day))
