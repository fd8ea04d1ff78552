"""One specimen, one result (issue 29): the same sample sent again by another route (another
event_id, the same participant, analyte and collection minute) raises nothing when its value
is the same, and an info `lab.discrepancy` when it is not, the worse value standing until a
correction settles it."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import ClinicalEvent, parse_event
from services.safety_rules.evaluate import run_all
from services.safety_rules.rules_config import load_rules
from tests.unit.safety_rules.builders import ParticipantBuilder, a_participant, alerts_of

CFG = load_rules()


def resent(event: ClinicalEvent, route: str, **changes: object) -> ClinicalEvent:
    """The same sample by another route: a new event_id, the same collection minute."""
    data = event.model_dump(mode="json")
    seconds = int(str(changes.pop("seconds", 0)))
    at = event.occurred_at + timedelta(seconds=seconds)
    data.update(
        event_id=str(__import__("uuid").uuid5(event.event_id, route)),
        source="fhir" if route == "fhir" else "sdtm",
        occurred_at=at.isoformat(),
        **changes,
    )
    for k in ("original_value", "original_unit"):
        data.pop(k, None)
    return parse_event(data)  # type: ignore[return-value]


def rising() -> ParticipantBuilder:
    return a_participant().enrolled(age=60).dosed(day=0).baseline("creatinine", 1.0)


def test_an_equal_copy_of_an_aki_sample_raises_nothing_more() -> None:
    events = rising().lab("creatinine", 2.1, day=30, visit="M1").events()
    once = [(a.rule_id, a.alert_id) for a in alerts_of(events)]
    assert {r for r, _ in once} >= {"creatinine.aki", "egfr.decline"}
    twice = [*events, resent(events[-1], "fhir", seconds=20)]  # same minute, 2.1 again
    assert [(a.rule_id, a.alert_id) for a in alerts_of(twice)] == once


def test_a_copy_within_the_reporting_precision_is_the_same_value() -> None:
    events = rising().lab("creatinine", 2.1, day=30, visit="M1").events()
    copy = resent(events[-1], "sdtm", value=2.104)  # creatinine is reported to 0.01 mg/dL
    assert [a.rule_id for a in alerts_of([*events, copy])] == [a.rule_id for a in alerts_of(events)]


def test_a_differing_copy_tells_the_data_manager_and_the_worse_value_rules() -> None:
    events = rising().lab("creatinine", 1.1, day=30, visit="M1").events()
    assert "creatinine.aki" not in {a.rule_id for a in alerts_of(events)}
    worse = resent(events[-1], "fhir", value=2.1)
    raised = alerts_of([*events, worse])
    (told,) = [a for a in raised if a.rule_id == "lab.discrepancy"]
    assert (told.severity.value, told.facts["first_value"], told.facts["second_value"]) == (
        "info", 1.1, 2.1,
    )  # fmt: skip
    assert told.facts["standing_event_id"] == str(worse.event_id)
    assert {"creatinine.aki", "egfr.decline"} <= {a.rule_id for a in raised}  # the worse, 2.1
    # in the other order, the better value arriving second does not hide the worse
    assert {"creatinine.aki", "egfr.decline"} <= {
        a.rule_id for a in alerts_of([*events[:-1], worse, events[-1]])
    }


def test_a_correction_of_either_copy_settles_the_discrepancy() -> None:
    p = rising().lab("creatinine", 1.1, day=30, visit="M1")
    first = p.events()[-1]
    wrong = resent(first, "fhir", value=2.1)
    events = [*p.events(), wrong]
    fixed = wrong.model_dump(mode="json")
    fixed.update(
        event_id="6f1c8f9e-8f3c-4a53-9d1b-2d4b8c1e0a77",
        supersedes=str(wrong.event_id),
        reason="the feed sent another participant's value",
        value=1.1,
    )
    fixed.pop("original_value", None)
    fixed.pop("original_unit", None)
    out = run_all([*events, parse_event(fixed)], CFG, None)  # type: ignore[list-item]
    withdrawn = {str(w.alert_id) for w in out if w.event_type == "alert.withdrawn"}
    standing = {
        a.rule_id
        for a in out
        if a.event_type == "alert.raised" and str(a.alert_id) not in withdrawn
    }
    assert "creatinine.aki" not in standing  # 1.1 stands again: the AKI is withdrawn


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_sending_any_results_again_by_another_route_changes_no_alert(data: st.DataObject) -> None:
    """Item 3's property: any subset of a participant's results, sent a second time by another
    route (new ids, the same minute, the same values; each after its original), changes no
    alert. (A copy arriving before its original stands for the sample instead: the same rules
    fire, citing the copy's id.)"""
    from tests.unit.safety_rules.histories import history

    events = data.draw(history())
    corrected = {str(e.supersedes) for e in events if e.supersedes is not None}
    # the results that stand: a copy of a value since corrected is a real discrepancy
    labs = [
        e for e in events if e.event_type == "lab.resulted" and str(e.event_id) not in corrected
    ]
    again = data.draw(st.lists(st.sampled_from(labs), unique=True) if labs else st.just([]))
    copies = [resent(e, "fhir", seconds=data.draw(st.integers(0, 59 - e.occurred_at.second)))
              for e in again]  # fmt: skip
    # each copy arrives after its original, anywhere later (a second time, by another route)
    mixed = list(events)
    for original, copy in zip(again, copies, strict=True):
        after = mixed.index(original) + 1
        mixed.insert(data.draw(st.integers(after, len(mixed))), copy)

    def standing(evs: list[ClinicalEvent]) -> set[tuple[str, str]]:
        out = run_all(evs, CFG, None)
        gone = {w.alert_id for w in out if w.event_type == "alert.withdrawn"}
        return {
            (a.rule_id, str(a.alert_id))
            for a in out
            if a.event_type == "alert.raised" and a.alert_id not in gone
        }

    assert standing(mixed) == standing(events)
