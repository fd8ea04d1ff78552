"""Each rule at and around its thresholds: just below, at, just above."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import ClinicalEvent
from tests.unit.safety_rules.builders import a_participant, alerts_of, rules_raised


def raised(events: list[ClinicalEvent], rule: str, **kw: object) -> list[str]:
    return [sev for rid, sev in rules_raised(events, **kw) if rid == rule]  # type: ignore[arg-type]


def patient() -> object:
    return a_participant().enrolled(sex="M", age=50).dosed(day=0)


# -- adverse events ---------------------------------------------------------------------------
def test_a_serious_ae_raises_sae_reported_due_in_24_hours() -> None:
    events = a_participant().enrolled().dosed().ae(serious=True, ctcae_grade=3).events()
    (alert,) = [a for a in alerts_of(events) if a.rule_id == "sae.reported"]
    assert alert.severity.value == "critical"
    assert alert.due_by == events[-1].recorded_at + timedelta(hours=24)
    assert alert.evidence == [events[-1].event_id]
    assert alert.thresholds == {"due_hours": 24}


def test_an_update_that_makes_an_ae_serious_raises_sae_reported_once() -> None:
    events = (
        a_participant()
        .enrolled()
        .dosed()
        .ae(serious=False)
        .ae(updated=True, day=6, serious=True)
        .ae(updated=True, day=8, serious=True, outcome="recovered")
        .events()
    )
    assert raised(events, "sae.reported") == ["critical"]


def test_a_non_serious_ae_raises_no_sae() -> None:
    assert raised(a_participant().enrolled().ae(ctcae_grade=2).events(), "sae.reported") == []


@pytest.mark.parametrize(
    ("fields", "days"),
    [
        ({"seriousness_criteria": ["hospitalization"]}, 15),
        ({"seriousness_criteria": ["life_threatening"]}, 7),
        ({"seriousness_criteria": ["death"], "ctcae_grade": 5, "outcome": "fatal"}, 7),
    ],
)
def test_susar_clock_is_7_days_if_fatal_or_life_threatening_else_15(
    fields: dict[str, object], days: int
) -> None:
    events = (
        a_participant()
        .enrolled()
        .ae(serious=True, relatedness="possible", expectedness="unexpected", **fields)
        .events()
    )
    (alert,) = [a for a in alerts_of(events) if a.rule_id == "susar.clock"]
    assert alert.facts["clock_days"] == days
    assert alert.due_by == events[-1].recorded_at + timedelta(days=days)


@pytest.mark.parametrize(
    ("relatedness", "expectedness"),
    [("unlikely", "unexpected"), ("not_related", "unexpected"), ("definite", "expected")],
)
def test_no_susar_unless_related_and_unexpected(relatedness: str, expectedness: str) -> None:
    events = (
        a_participant()
        .enrolled()
        .ae(serious=True, relatedness=relatedness, expectedness=expectedness)
        .events()
    )
    assert raised(events, "susar.clock") == []


@pytest.mark.parametrize(
    ("grade", "serious", "expected"),
    [(2, False, []), (3, False, ["high"]), (4, False, ["high"]), (3, True, [])],
)
def test_ae_severe_from_grade_3_when_not_serious(
    grade: int, serious: bool, expected: list[str]
) -> None:
    events = a_participant().enrolled().ae(ctcae_grade=grade, serious=serious).events()
    assert raised(events, "ae.severe") == expected


# -- creatinine: KDIGO ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("second", "hours", "expected"),
    [(1.29, 24, []), (1.30, 24, [1]), (1.31, 47, [1]), (1.30, 49, [])],
)
def test_creatinine_rise_of_0_3_within_48h_is_aki_stage_1(
    second: float, hours: float, expected: list[int]
) -> None:
    events = (
        patient()
        .baseline("creatinine", 1.0)
        .lab("creatinine", 1.0, day=10)  # type: ignore[attr-defined]
        .lab("creatinine", second, day=10 + hours / 24)
        .events()
    )
    stages = [a.facts["stage"] for a in alerts_of(events) if a.rule_id == "creatinine.aki"]
    assert stages == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.49, []),
        (1.50, [(1, "high")]),
        (1.99, [(1, "high")]),
        (2.0, [(2, "critical")]),
        (2.99, [(2, "critical")]),
        (3.0, [(3, "critical")]),
    ],
)
def test_creatinine_ratio_to_baseline_gives_the_kdigo_stage(
    value: float, expected: list[tuple[int, str]]
) -> None:
    events = (
        patient().baseline("creatinine", 1.0).lab("creatinine", value, day=30, visit="M1").events()
    )  # type: ignore[attr-defined]
    got = [
        (a.facts["stage"], a.severity.value)
        for a in alerts_of(events)
        if a.rule_id == "creatinine.aki"
    ]
    assert got == expected


def test_creatinine_of_4_mg_dl_with_a_rise_is_stage_3() -> None:
    events = patient().baseline("creatinine", 2.6).lab("creatinine", 4.0, day=30).events()  # type: ignore[attr-defined]
    (alert,) = [a for a in alerts_of(events) if a.rule_id == "creatinine.aki"]
    assert alert.facts["stage"] == 3


def test_creatinine_sent_in_umol_per_l_is_judged_in_mg_per_dl() -> None:
    events = (
        patient()
        .lab("creatinine", 88.4, day=-5, visit="baseline", unit="umol/L")  # type: ignore[attr-defined]
        .lab("creatinine", 176.8, day=30, unit="umol/L")
        .events()
    )
    (alert,) = [a for a in alerts_of(events) if a.rule_id == "creatinine.aki"]
    assert (alert.facts["stage"], alert.facts["creatinine_mg_dl"]) == (2, 2.0)
