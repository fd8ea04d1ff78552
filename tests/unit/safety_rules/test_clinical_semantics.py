"""DESIGN "Clinical semantics": the signals the engine must not miss on real-world data.

Each test is one finding of the rules issue, reproduced as a safety reviewer found it; the
scenario files in tests/scenarios/ replay the same stories through `safety-monitor evaluate`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import AlertRaised, AlertWithdrawn, ClinicalEvent, InvalidEvent, parse_event
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.evaluate import run_all
from tests.unit.safety_rules.builders import DAY0, a_participant, alerts_of, rules_raised


def arriving_late(events: list[ClinicalEvent], index: int) -> list[ClinicalEvent]:
    """The same events with the index-th entered last (its occurred_at unchanged)."""
    late = events[index]
    return [e for i, e in enumerate(events) if i != index] + [late]


def of(events: list[ClinicalEvent], rule: str) -> list[AlertRaised]:
    return [a for a in alerts_of(events) if a.rule_id == rule]


def patient():  # type: ignore[no-untyped-def]
    return a_participant().enrolled(sex="M", age=50)


# -- 1. arrival order is not clinical order ----------------------------------------------------
def test_a_baseline_entered_after_the_m1_result_reveals_the_egfr_decline() -> None:
    # creatinine 1.0 -> 1.7 (70% above): eGFR 91.7 -> 48.5, 47% below baseline: critical
    events = (
        patient().dosed(day=0).baseline("creatinine", 1.0, day=-5)
        .lab("creatinine", 1.7, day=30, visit="M1").events()
    )  # fmt: skip
    in_order = {(a.rule_id, a.severity.value) for a in alerts_of(events)}
    late = arriving_late(events, 2)  # the baseline is entered last
    assert ("egfr.decline", "critical") in in_order
    assert {(a.rule_id, a.severity.value) for a in alerts_of(late)} == in_order
    (decline,) = of(late, "egfr.decline")
    assert decline.facts["baseline_egfr"] == 91.7 and decline.facts["egfr"] == 48.5
    assert decline.facts["baseline_date"] == (DAY0 - timedelta(days=5)).date().isoformat()
    assert decline.occurred_at == DAY0 + timedelta(days=30)  # placed at the M1 sample


def test_an_earlier_sample_entered_second_reveals_a_rise_within_48_hours() -> None:
    events = (
        patient().dosed(day=0).baseline("creatinine", 1.2, day=-5)
        .lab("creatinine", 1.0, day=29.5).lab("creatinine", 1.45, day=30).events()
    )  # fmt: skip
    swapped = [*events[:3], events[4], events[3]]  # 1.45 entered before the 1.0 of 12 h earlier
    (aki,) = of(swapped, "creatinine.aki")
    assert (aki.severity.value, aki.facts["stage"], aki.facts["rise_48h_mg_dl"]) == (
        "high",
        1,
        0.45,
    )
    assert aki.facts["reference_mg_dl"] == 1.0
    assert [a.alert_id for a in of(events, "creatinine.aki")] == [aki.alert_id]


def test_a_corrected_baseline_typo_raises_the_decline_it_hid() -> None:
    b = patient().dosed(day=0).baseline("creatinine", 2.0, day=-5)  # typed 2.0 for 1.0
    b.lab("creatinine", 1.9, day=30, visit="M1")
    assert rules_raised(b.events()) == []
    b.corrected(2, value=1.0)
    raised = rules_raised(b.events())
    assert ("egfr.decline", "critical") in raised and ("creatinine.aki", "high") in raised


def test_a_dose_recorded_after_the_labs_gives_them_their_baseline() -> None:
    events = (
        patient().lab("creatinine", 1.0, day=-3).dosed(day=0)
        .lab("creatinine", 1.9, day=30, visit="M1").events()
    )  # fmt: skip
    dose_last = arriving_late(events, 2)
    (decline,) = of(dose_last, "egfr.decline")
    assert (decline.severity.value, decline.facts["baseline_egfr"]) == ("critical", 91.7)


# -- corrections withdraw, never delete --------------------------------------------------------
def test_a_correction_withdraws_the_alert_its_evidence_was_corrected_away_from() -> None:
    b = patient().dosed(day=0).baseline("creatinine", 1.0, day=-5)
    b.lab("creatinine", 1.9, day=30, visit="M1").corrected(3, value=1.05)
    out = run_all(b.events(), RulesConfig(), None)
    raised = [a for a in out if isinstance(a, AlertRaised) and a.rule_id == "egfr.decline"]
    (withdrawn,) = [w for w in out if isinstance(w, AlertWithdrawn) and w.rule_id == "egfr.decline"]
    assert [a.alert_id for a in raised] == [withdrawn.alert_id]  # raised, then withdrawn
    assert withdrawn.withdrawn_by == b.events()[-1].event_id
    assert withdrawn.superseded == b.events()[3].event_id
    assert "transcription error" in withdrawn.reason


def test_a_correction_that_keeps_the_signal_withdraws_nothing_it_still_raises() -> None:
    b = patient().dosed(day=0).baseline("creatinine", 1.0, day=-5)
    b.lab("creatinine", 1.9, day=30, visit="M1").ae(serious=True, ctcae_grade=3)
    b.corrected(4, term="Perirenal haematoma")  # same criteria, better term
    out = run_all(b.events(), RulesConfig(), None)
    assert not [w for w in out if isinstance(w, AlertWithdrawn)]
    assert len([a for a in out if isinstance(a, AlertRaised) and a.rule_id == "sae.reported"]) == 1


# -- 2. censored values, in the safe direction -------------------------------------------------
def test_a_reported_egfr_below_15_is_kidney_failure() -> None:
    events = patient().dosed(day=0).lab("egfr", 15, day=30, comparator="<").events()
    (alert,) = of(events, "egfr.kidney_failure")
    assert alert.facts["egfr"] == "<15" and "<15" in alert.title


def test_a_uacr_above_3000_against_a_baseline_of_180_is_a_rise() -> None:
    events = (
        patient().baseline("uacr", 180).dosed(day=0)
        .lab("uacr", 3000, day=30, comparator=">").events()
    )  # fmt: skip
    (alert,) = of(events, "uacr.rise")
    assert alert.facts["ratio_at_least"] == pytest.approx(3000 / 180, abs=1e-3)
    assert alert.facts["into_a3"] is True and alert.facts["uacr_mg_g"] == ">3e+03"


def test_a_censored_tnf_alpha_baseline_serves_where_its_bound_proves_the_rise() -> None:
    b = patient().lab("tnf_alpha", 2, day=-5, visit="baseline", comparator="<").dosed(day=0)
    (alert,) = of(b.lab("tnf_alpha", 80, day=30).events(), "inflammation.rise")
    assert alert.facts["ratio_at_least"] == 40.0 and "at least 40.0x" in alert.title
    # a bound that proves nothing raises nothing: 3 against "<2" may be 1.5x or 300x
    assert of(b.lab("tnf_alpha", 3, day=60).events(), "inflammation.rise") == [alert]


def test_a_creatinine_above_a_bound_proves_aki_and_kidney_failure() -> None:
    events = (
        patient()
        .dosed(day=0)
        .baseline("creatinine", 1.0)
        .lab("creatinine", 5.0, day=30, comparator=">")
        .events()
    )
    raised = set(rules_raised(events))
    assert {("creatinine.aki", "critical"), ("egfr.decline", "critical"),
            ("egfr.kidney_failure", "critical")} <= raised  # fmt: skip


def test_a_censored_creatinine_below_a_bound_proves_no_rise() -> None:
    events = (
        patient()
        .dosed(day=0)
        .baseline("creatinine", 1.0)
        .lab("creatinine", 0.5, day=30, comparator="<")
        .events()
    )
    assert rules_raised(events) == []


# -- 3. unassessed fields count against safety -------------------------------------------------
def test_an_sae_with_expectedness_not_assessed_starts_the_susar_clock() -> None:
    events = patient().dosed().ae(serious=True, ctcae_grade=3, relatedness="possible",
                                  expectedness=None).events()  # fmt: skip
    (susar,) = of(events, "susar.clock")
    assert susar.facts["unassessed"] == "expectedness" and "not yet assessed" in susar.title
    assert susar.due_by == events[-1].recorded_at + timedelta(days=15)


def test_an_sae_with_causality_not_assessed_starts_the_clock_and_counts_for_stopping() -> None:
    sae = {"serious": True, "ctcae_grade": 3, "expectedness": "unexpected"}
    a = a_participant("DN-001").enrolled().dosed().ae(**sae, relatedness="not_assessed")
    b = a_participant("DN-002").enrolled().dosed().ae(**sae, relatedness="not_assessed")
    raised = rules_raised(a.events() + b.events())
    assert raised.count(("susar.clock", "critical")) == 2
    assert ("trial.stopping_rule", "critical") in raised


def test_an_ae_without_causality_is_accepted_as_not_assessed() -> None:
    (event,) = a_participant().ae(serious=True, ctcae_grade=3).events()
    data = event.model_dump(mode="json")
    del data["relatedness"]
    assert parse_event(data).relatedness.value == "not_assessed"  # type: ignore[union-attr]


# -- 4. deaths -----------------------------------------------------------------------------------
def test_an_sae_later_updated_to_fatal_raises_a_new_critical_alert() -> None:
    b = patient().dosed().ae(serious=True, ctcae_grade=3, relatedness="not_related",
                             seriousness_criteria=["hospitalization"])  # fmt: skip
    b.ae(updated=True, day=9, serious=True, ctcae_grade=5, outcome="fatal",
         relatedness="not_related", seriousness_criteria=["hospitalization"])  # fmt: skip
    saes = of(b.events(), "sae.reported")
    assert [a.facts["criteria"] for a in saes] == ["hospitalization", "death, hospitalization"]
    assert all(a.severity.value == "critical" for a in saes)


def test_an_update_adding_a_criterion_raises_a_new_alert_but_a_repeat_does_not() -> None:
    b = patient().dosed().ae(serious=True, ctcae_grade=3, seriousness_criteria=["hospitalization"])
    b.ae(updated=True, day=6, serious=True, ctcae_grade=4,
         seriousness_criteria=["hospitalization", "life_threatening"])  # fmt: skip
    b.ae(updated=True, day=8, serious=True, ctcae_grade=4, outcome="recovered",
         seriousness_criteria=["hospitalization", "life_threatening"])  # fmt: skip
    assert len(of(b.events(), "sae.reported")) == 2


def test_a_fatal_ae_sent_as_not_serious_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidEvent) as refused:
        a_participant().ae(serious=False, ctcae_grade=5, outcome="fatal")
    assert [(e.field, e.reason) for e in refused.value.errors] == [
        ("serious", "an AE with outcome fatal is serious (criterion death); it was sent as "
                    "not serious")
    ]  # fmt: skip


def test_a_fatal_ae_is_serious_with_the_death_criterion_whatever_criteria_were_sent() -> None:
    events = patient().ae(serious=True, ctcae_grade=5, outcome="fatal",
                          seriousness_criteria=["hospitalization"]).events()  # fmt: skip
    (sae,) = of(events, "sae.reported")
    assert sae.facts["criteria"] == "death, hospitalization"


def test_regulatory_clocks_count_from_awareness_and_say_when_already_missed() -> None:
    aware = (DAY0 + timedelta(days=1)).isoformat()
    events = patient().ae(day=5, serious=True, ctcae_grade=3, aware_at=aware).events()
    (sae,) = of(events, "sae.reported")
    assert sae.due_by == DAY0 + timedelta(days=2)
    assert sae.facts["deadline_passed_on_entry"] is True
    assert "DEADLINE ALREADY PASSED: entered 97 h after the site's awareness" in sae.title


# -- 5. A3 without baseline, a second dose, thresholds with tolerance --------------------------
def test_a_move_into_a3_without_any_baseline_is_raised() -> None:
    events = patient().lab("uacr", 250, day=20).lab("uacr", 320, day=50).events()
    (alert,) = of(events, "uacr.rise")
    assert alert.facts["into_a3"] is True and alert.facts["baseline_mg_g"] is None


def test_a_second_dose_raises_dose_repeat_and_moves_neither_baseline_nor_windows() -> None:
    b = patient().baseline("creatinine", 1.0, day=-5).dosed(day=0)
    b.lab("creatinine", 1.05, day=20).dosed(day=25).lab("creatinine", 1.9, day=30, visit="M1")
    alerts = alerts_of(b.events(), as_of=DAY0 + timedelta(days=40))
    (repeat,) = [a for a in alerts if a.rule_id == "dose.repeat"]
    assert repeat.severity.value == "high"
    (decline,) = [a for a in alerts if a.rule_id == "egfr.decline"]
    assert decline.facts["baseline_egfr"] == 91.7  # not the 20-day result before the 2nd dose
    (overdue,) = [a for a in alerts if a.rule_id == "visit.overdue"]
    assert overdue.thresholds["visit"] == "M1"
    assert overdue.facts["window_closed"] == (DAY0 + timedelta(days=37)).isoformat()


def test_a_ratio_of_exactly_1_5_meets_the_aki_threshold() -> None:
    assert 1.65 / 1.10 < 1.5  # what the floats say
    events = (
        patient().dosed(day=0).baseline("creatinine", 1.10).lab("creatinine", 1.65, day=30).events()
    )
    (aki,) = of(events, "creatinine.aki")
    assert aki.facts["stage"] == 1


def test_every_exact_1_5x_pair_on_a_0_01_grid_meets_the_threshold() -> None:
    pairs = [(b / 100, b * 3 / 200) for b in range(50, 790, 2)]  # 370 exact 1.5x pairs
    assert len(pairs) == 370
    missed = []
    for base, value in pairs:
        events = (
            patient()
            .dosed(day=0)
            .baseline("creatinine", base)
            .lab("creatinine", round(value, 2), day=30)
            .events()
        )
        if not of(events, "creatinine.aki"):
            missed.append((base, value))
    assert missed == []


def test_an_ae_serious_again_after_a_correction_withdrew_its_alert_raises_anew() -> None:
    b = patient().dosed().ae(serious=True, ctcae_grade=3)  # hospitalization
    b.corrected(2, serious=False, seriousness_criteria=[])  # entered as serious by mistake
    b.ae(updated=True, day=9, serious=True, ctcae_grade=3)  # then it is: hospitalised
    out = run_all(b.events(), RulesConfig(), None)
    saes = [a for a in out if isinstance(a, AlertRaised) and a.rule_id == "sae.reported"]
    (withdrawn,) = [w for w in out if isinstance(w, AlertWithdrawn)]
    assert saes[0].alert_id == withdrawn.alert_id
    assert len(saes) == 2 and saes[1].alert_id != withdrawn.alert_id
    assert saes[1].evidence == [b.events()[-1].event_id]


def test_a_correction_spares_an_alert_whose_verdict_moved_onto_other_evidence() -> None:
    # found by the arrival-order property: the M1 eGFR reported by the lab arrives before the M1
    # creatinine (which then stands for that sample), and is corrected afterwards; the slope the
    # M3 result shows stands on the creatinine, and must not be withdrawn with the correction
    b = a_participant().enrolled(sex="F", age=40).baseline("creatinine", 1.0, day=-5).dosed(day=0)
    b.lab("egfr", 8.0, day=91, visit="M3").lab("egfr", 8.0, day=30.9, visit="M1")
    b.lab("creatinine", 1.0, day=30, visit="M1").corrected(4, reason="wrong sample id")
    events = b.events()
    in_time = sorted(events[:6], key=lambda e: e.occurred_at)
    at = in_time.index(events[4]) + 1
    clinical = [*in_time[:at], events[6], *in_time[at:]]  # the correction right after its original

    def slopes(order: list[ClinicalEvent]) -> set[object]:
        out = run_all(order, RulesConfig(), None)
        gone = {w.alert_id for w in out if isinstance(w, AlertWithdrawn)}
        return {
            a.alert_id
            for a in out
            if isinstance(a, AlertRaised) and a.rule_id == "egfr.rapid_slope"
            and a.alert_id not in gone
        }  # fmt: skip

    assert len(slopes(clinical)) == 1
    assert slopes(clinical) <= slopes(events)


def test_a_late_creatinine_is_the_aki_reference_as_far_back_as_the_configured_window() -> None:
    """With a 14-day reference window (rules.yaml may set it), a creatinine of day 10 entered
    after day 20's is day 20's reference: 2.0 / 1.0 is stage 2. Clinical order raises it;
    arriving late must too (the fold once marked only 7 days after a late result)."""
    cfg = RulesConfig.model_validate(
        {"creatinine_aki": {**RulesConfig().creatinine_aki.model_dump(), "ratio_window_days": 14}}
    )
    b = (
        a_participant()
        .enrolled()
        .baseline("creatinine", 1.5)
        .dosed(day=0)
        .lab("creatinine", 2.0, day=20)  # 1.33x the baseline: nothing
        .lab("creatinine", 1.0, day=10)  # taken on day 10, entered after day 20's
    )
    events = b.events()
    in_clinical_order = sorted(events, key=lambda e: e.occurred_at)
    for order in (in_clinical_order, events):
        aki = [a for a in alerts_of(order, cfg=cfg) if a.rule_id == "creatinine.aki"]
        assert [(a.facts["stage"], a.facts["reference_mg_dl"]) for a in aki] == [(2, 1.0)]
    # the default window (7 days) does not reach back to day 10: no AKI in either order
    for order in (in_clinical_order, events):
        assert not [a for a in alerts_of(order) if a.rule_id == "creatinine.aki"]
