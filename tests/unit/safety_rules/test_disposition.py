"""The schedule ends at the disposition (issue 29): no visit is owed after a participant
died, completed or withdrew; a disposition corrected away re-opens the schedule; data that
happened before the end, or a death after a withdrawal, is still evaluated."""

from __future__ import annotations

from datetime import timedelta

from contracts import ClinicalEvent
from tests.unit.safety_rules.builders import DAY0, ParticipantBuilder, a_participant, alerts_of

A_YEAR_ON = DAY0 + timedelta(days=400)  # every window (M12 closes on day 379) has closed


def overdue(events: list[ClinicalEvent]) -> list[str]:
    return sorted(
        str(a.thresholds["visit"])
        for a in alerts_of(events, A_YEAR_ON)
        if a.rule_id == "visit.overdue"
    )


def seen_to_m3() -> ParticipantBuilder:
    return a_participant().enrolled().dosed(day=0).visit("M1", day=30).visit("M3", day=91)


def test_without_a_disposition_every_missed_visit_is_overdue_a_year_on() -> None:
    assert overdue(seen_to_m3().events()) == ["M12", "M6", "M9"]


def test_a_participant_who_died_of_a_fatal_ae_at_day_120_owes_no_visit_after_it() -> None:
    p = seen_to_m3().ae(
        day=120, onset_date="2026-06-30", serious=True, ctcae_grade=5, outcome="fatal",
        seriousness_criteria=["death"],
    )  # fmt: skip
    assert overdue(p.events()) == []


def test_a_death_recorded_as_a_disposition_ends_the_schedule_too() -> None:
    assert overdue(seen_to_m3().left("died", day=120).events()) == []


def test_visits_whose_window_closed_before_the_withdrawal_are_still_owed() -> None:
    p = a_participant().enrolled().dosed(day=0).visit("M1", day=30)
    # M3's window closed on day 105, before the withdrawal on day 200; M6's on day 196 too
    assert overdue(p.left("withdrew_consent", day=200).events()) == ["M3", "M6"]


def test_a_withdrawal_corrected_away_gives_the_overdue_visits_back() -> None:
    p = seen_to_m3().left(
        "withdrawn_by_investigator", day=120, withdrawal_reason="protocol_violation"
    )
    assert overdue(p.events()) == []
    p.corrected(len(p.events()) - 1, "entered for the wrong participant", disposition="on_study",
                withdrawal_reason=None)  # fmt: skip
    assert overdue(p.events()) == ["M12", "M6", "M9"]


def test_a_disposition_corrected_to_another_date_moves_the_end() -> None:
    p = seen_to_m3().left("lost_to_follow_up", day=120)
    p.corrected(len(p.events()) - 1, "the date was mistyped", disposition_date="2027-01-25")
    assert overdue(p.events()) == ["M6", "M9"]  # the end moved to day 329: M12 closes after


def test_a_fatal_ae_followed_up_as_not_fatal_reopens_the_schedule() -> None:
    p = seen_to_m3().ae(
        day=120, onset_date="2026-06-30", serious=True, ctcae_grade=5, outcome="fatal",
        seriousness_criteria=["death"],
    )  # fmt: skip
    p.ae(day=125, updated=True, onset_date="2026-06-30", serious=True, ctcae_grade=4,
         outcome="recovering", seriousness_criteria=["life_threatening"])  # fmt: skip
    assert overdue(p.events()) == ["M12", "M6", "M9"]


def test_a_death_after_withdrawal_and_a_lab_from_before_it_still_raise_their_alerts() -> None:
    p = (
        seen_to_m3()
        .baseline("creatinine", 1.0)
        .left("withdrew_consent", day=150)
        .ae(
            day=200,
            onset_date="2026-09-18",
            serious=True,
            ctcae_grade=5,
            outcome="fatal",
            seriousness_criteria=["death"],
            relatedness="possible",
        )
        .lab("creatinine", 2.5, day=140)  # drawn before the withdrawal, arriving after it
    )
    rules = {a.rule_id for a in alerts_of(p.events(), A_YEAR_ON)}
    assert {"sae.reported", "creatinine.aki"} <= rules
    assert "visit.overdue" not in rules  # M6's window closes on day 196, after the withdrawal
