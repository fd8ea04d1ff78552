"""Properties of the engine over generated participant histories (tests/unit/safety_rules/
histories.py): lateness never hides a signal, and a replay changes nothing."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import AlertRaised, AlertWithdrawn, ClinicalEvent
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.engine import evaluate
from services.safety_rules.domain.state import ParticipantState
from services.safety_rules.evaluate import run_all
from tests.unit.safety_rules.histories import arrival, history

CFG = RulesConfig()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def standing(events: list[ClinicalEvent]) -> dict[str, AlertRaised]:
    """The alerts raised and not withdrawn, by alert id."""
    out = run_all(events, CFG, as_of=None)
    gone = {w.alert_id for w in out if isinstance(w, AlertWithdrawn)}
    return {
        str(a.alert_id): a for a in out if isinstance(a, AlertRaised) and a.alert_id not in gone
    }


@PROPERTY
@given(st.data())
def test_lateness_never_hides_a_signal(data: st.DataObject) -> None:
    """(a) Every alert that clinical order raises (and no correction withdraws) is raised by
    any arrival order too, with the same alert id, rule and severity."""
    clinical = data.draw(history())
    arrived = data.draw(arrival(clinical))
    expected, got = standing(clinical), standing(arrived)
    missing = {k: (a.rule_id, a.title) for k, a in expected.items() if k not in got}
    assert not missing
    for k, a in expected.items():
        assert (got[k].rule_id, got[k].severity) == (a.rule_id, a.severity)


@PROPERTY
@given(st.data())
def test_two_participants_arriving_interleaved_raise_the_same_trial_alerts(
    data: st.DataObject,
) -> None:
    one, two = data.draw(history("DN-001")), data.draw(history("DN-002"))
    clinical = sorted(one + two, key=lambda e: (e.occurred_at, e.participant_id))
    arrived = data.draw(arrival(one)) + data.draw(arrival(two))
    assert set(standing(clinical)) <= set(standing(arrived))


@PROPERTY
@given(st.data())
def test_replaying_the_stream_twice_changes_nothing(data: st.DataObject) -> None:
    """(b) The second delivery of every event raises and withdraws nothing, and the state that
    a worker would store is the same bytes."""
    events = data.draw(arrival(data.draw(history())))
    state = ParticipantState()
    for e in events:
        evaluate(state, e, CFG)
    snapshot = state.to_json()
    again = [evaluate(state, e, CFG) for e in events]
    assert all(o.duplicate and not o.alerts and not o.withdrawn for o in again)
    assert state.to_json() == snapshot
    assert ParticipantState.from_json(snapshot).to_json() == snapshot
    assert run_all(events + events, CFG, None) == run_all(events, CFG, None)
