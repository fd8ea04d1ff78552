"""eGFR, UACR, inflammation, dose, visits, the stopping rule and the eGFR cross-check."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import ClinicalEvent
from tests.unit.safety_rules.builders import DAY0, a_participant, alerts_of, rules_raised


def raised(events: list[ClinicalEvent], rule: str, **kw: object) -> list[str]:
    return [sev for rid, sev in rules_raised(events, **kw) if rid == rule]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("egfr", "expected"), [(42.1, []), (42.0, ["high"]), (36.1, ["high"]), (36.0, ["critical"])]
)
def test_egfr_decline_from_baseline_is_high_at_30_and_critical_at_40_percent(
    egfr: float, expected: list[str]
) -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("egfr", 60)
        .lab("egfr", egfr, day=91, visit="M3")
        .events()
    )
    assert raised(events, "egfr.decline") == expected


def test_egfr_decline_uses_ckd_epi_from_creatinine_when_there_is_one() -> None:
    # male 50: Scr 1.0 -> 91.7, Scr 1.9 -> 42.9 (53% lower)
    events = (
        a_participant()
        .enrolled(sex="M", age=50)
        .dosed()
        .baseline("creatinine", 1.0)
        .lab("creatinine", 1.9, day=91, visit="M3")
        .events()
    )
    (alert,) = [a for a in alerts_of(events) if a.rule_id == "egfr.decline"]
    assert alert.severity.value == "critical"
    assert alert.facts["baseline_egfr"] == 91.7


@pytest.mark.parametrize(("egfr", "expected"), [(15.0, []), (14.9, ["critical"])])
def test_egfr_below_15_is_kidney_failure(egfr: float, expected: list[str]) -> None:
    events = a_participant().enrolled().dosed().lab("egfr", egfr, day=30).events()
    assert raised(events, "egfr.kidney_failure") == expected


@pytest.mark.parametrize(("last", "expected"), [(55.0, []), (54.8, ["medium"])])
def test_egfr_slope_faster_than_5_per_year_from_3_results(last: float, expected: list[str]) -> None:
    year = 365.25
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("egfr", 60, day=0)
        .lab("egfr", 57.5, day=year / 2)
        .lab("egfr", last, day=year)
        .events()
    )
    assert raised(events, "egfr.rapid_slope") == expected


@pytest.mark.parametrize(("span_days", "expected"), [(89, []), (90, ["medium"])])
def test_a_slope_is_read_only_over_90_days_or_more(span_days: int, expected: list[str]) -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("egfr", 60, day=0)
        .lab("egfr", 58, day=span_days / 2)
        .lab("egfr", 55, day=span_days)
        .events()
    )
    assert raised(events, "egfr.rapid_slope") == expected


def test_a_steep_slope_is_raised_once_while_it_stays_steep() -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("egfr", 60, day=0)
        .lab("egfr", 55, day=90)
        .lab("egfr", 50, day=180)
        .lab("egfr", 46, day=270)
        .events()
    )
    assert raised(events, "egfr.rapid_slope") == ["medium"]


@pytest.mark.parametrize(
    ("base", "value", "expected"),
    [(100, 199, []), (100, 200, ["medium"]), (200, 300, []), (200, 301, ["medium"])],
)
def test_uacr_doubling_or_moving_into_a3(base: float, value: float, expected: list[str]) -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("uacr", base)
        .lab("uacr", value, day=30)
        .events()
    )
    assert raised(events, "uacr.rise") == expected


def test_uacr_in_mg_per_mmol_is_compared_in_mg_per_g() -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("uacr", 100)
        .lab("uacr", 22.7, day=30, unit="mg/mmol")
        .events()
    )  # 200.7 mg/g
    assert raised(events, "uacr.rise") == ["medium"]


@pytest.mark.parametrize(("value", "expected"), [(19.9, []), (20.0, ["info"])])
def test_tnf_alpha_doubling_is_an_info_signal(value: float, expected: list[str]) -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .baseline("tnf_alpha", 10)
        .lab("tnf_alpha", value, day=30)
        .events()
    )
    assert raised(events, "inflammation.rise") == expected


@pytest.mark.parametrize(
    ("cells_per_kg", "expected"), [(0.89e6, ["high"]), (0.9e6, []), (1.1e6, []), (1.11e6, ["high"])]
)
def test_dose_outside_10_percent_of_1e6_cells_per_kg(
    cells_per_kg: float, expected: list[str]
) -> None:
    events = a_participant().enrolled().dosed(cells_per_kg=cells_per_kg).events()
    assert raised(events, "dose.deviation") == expected


@pytest.mark.parametrize(("days", "expected"), [(37, []), (37.01, ["medium"])])
def test_m1_is_overdue_once_day_37_passes_without_the_visit(
    days: float, expected: list[str]
) -> None:
    events = a_participant().enrolled().dosed(day=0).events()
    assert raised(events, "visit.overdue", as_of=DAY0 + timedelta(days=days)) == expected


def test_a_completed_visit_is_not_overdue_and_the_clock_is_explicit() -> None:
    events = a_participant().enrolled().dosed(day=0).visit("M1", day=31).events()
    assert raised(events, "visit.overdue", as_of=DAY0 + timedelta(days=100)) == []
    assert raised(events, "visit.overdue", as_of=DAY0 + timedelta(days=106)) == ["medium"]  # M3


def related_severe_sae(pid: str) -> list[ClinicalEvent]:
    return (
        a_participant(pid)
        .enrolled()
        .dosed()
        .ae(serious=True, ctcae_grade=3, relatedness="probable")
        .events()
    )


def test_one_participant_with_a_related_severe_sae_does_not_stop_the_trial() -> None:
    assert raised(related_severe_sae("DN-001"), "trial.stopping_rule") == []


def test_two_participants_with_related_grade_3_saes_call_the_dsmb() -> None:
    events = related_severe_sae("DN-001") + related_severe_sae("DN-002")
    (alert,) = [a for a in alerts_of(events) if a.rule_id == "trial.stopping_rule"]
    assert alert.severity.value == "critical" and alert.participant_id is None
    assert alert.facts["participants"] == 2


def test_any_related_death_calls_the_dsmb() -> None:
    events = (
        a_participant()
        .enrolled()
        .ae(
            serious=True,
            ctcae_grade=5,
            outcome="fatal",
            seriousness_criteria=["death"],
            relatedness="possible",
        )
        .events()
    )
    assert raised(events, "trial.stopping_rule") == ["critical"]


@pytest.mark.parametrize(("reported", "expected"), [(100.8, []), (101.0, ["info"])])
def test_reported_egfr_more_than_10_percent_off_ckd_epi_is_flagged(
    reported: float, expected: list[str]
) -> None:
    # male 50, Scr 1.0 -> 91.7; 100.8 is 9.9% above, 101.0 is 10.1% above
    events = (
        a_participant()
        .enrolled(sex="M", age=50)
        .lab("creatinine", 1.0, day=1)
        .lab("egfr", reported, day=1.1)
        .events()
    )
    assert raised(events, "lab.egfr_mismatch") == expected


def test_every_alert_names_its_rule_version_and_thresholds() -> None:
    events = a_participant().enrolled().dosed(cells_per_kg=2e6).events()
    (alert,) = alerts_of(events)
    assert (alert.rule_id, alert.rule_version) == ("dose.deviation", 1)
    assert alert.thresholds == {"target_cells_per_kg": 1_000_000, "tolerance": 0.1}
