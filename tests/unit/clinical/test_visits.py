"""The protocol's visit windows (clinical.visits): the one definition visit.overdue and the DSMB
report read."""

from __future__ import annotations

from datetime import date

from clinical.visits import PROTOCOL_WINDOWS, study_day, visit_for_day


def test_windows_are_the_protocols() -> None:
    assert PROTOCOL_WINDOWS == {
        "M1": (30, 7), "M3": (91, 14), "M6": (182, 14), "M9": (273, 14), "M12": (365, 14)
    }  # fmt: skip
    assert study_day(date(2026, 2, 9), date(2026, 1, 10)) == 30


def test_a_day_goes_to_the_window_holding_it_and_the_label_only_breaks_ties() -> None:
    assert [visit_for_day(d) for d in (22, 23, 37, 38, 76, 77, 379, 380)] == [
        None, "M1", "M1", None, None, "M3", "M12", None,
    ]  # fmt: skip
    assert visit_for_day(60, hint="M1") is None  # labelled M1, taken on day 60: no visit
    overlapping = {"A": (10, 5), "B": (16, 5)}
    assert visit_for_day(12, overlapping) == "A"  # nearer A's target
    assert visit_for_day(13, overlapping) == "A"  # as near to both: the earlier...
    assert visit_for_day(13, overlapping, hint="B") == "B"  # ...unless the label says B
