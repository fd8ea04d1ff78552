"""A participant's course through the schedule: when it ends, and which visits it still owes
(DESIGN, "Participants' course: disposition").

The schedule ends at the earliest of the participant's dispositions (completed, withdrew, lost
to follow-up, died, screen failure) and the date of death of a fatal AE. A visit is owed
(`visit.overdue` may raise) only if its window closed before the schedule ended; a participant
counts in a visit's denominator only if still on study when its window opened. Data arriving
after the end is still evaluated: only the schedule stops, never the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from clinical.visits import PROTOCOL_WINDOWS


def schedule_end(ends: Iterable[date]) -> date | None:
    """The day the schedule ended: the earliest of the participant's ends; None: on study."""
    return min(ends, default=None)


def death_date(end_date: str | None, onset_date: str) -> date:
    """The day of death a fatal AE gives: its end date, else its onset, each an ISO date that may
    be partial (2026-05, 2026), read as the first day it can be (the schedule ends no later
    than the death can have happened)."""
    text = end_date or onset_date
    parts = [int(x) for x in text.split("-")]
    return date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)


def owes(window_closed: date, end: date | None) -> bool:
    """Whether a visit whose window closed on `window_closed` is owed by a participant whose
    schedule ended on `end`: only if it closed before the end."""
    return end is None or window_closed < end


def on_study_for(
    visit: str,
    study_day_of_end: int | None,
    windows: Mapping[str, tuple[int, int]] = PROTOCOL_WINDOWS,
) -> bool:
    """Whether a participant whose schedule ended on study day `study_day_of_end` (None: still
    on study) counts in `visit`'s denominator: still on study when its window opened."""
    if study_day_of_end is None or visit not in windows:
        return True
    target, tolerance = windows[visit]
    return study_day_of_end >= target - tolerance
