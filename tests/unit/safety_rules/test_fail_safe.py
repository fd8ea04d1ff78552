"""Nothing the door (or a topic) holds may silence an alert: the cases the door properties
(tests/unit/test_door_properties.py) and the security review found, each a regular test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts import AlertRaised, AlertWithdrawn, decode, encode
from contracts.common import ELLIPSIS, NAME_MAX, TEXT_MAX
from services.cli import main
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.evaluate import run_all
from tests.unit.safety_rules.builders import a_participant

CRITERIA = ["death", "life_threatening", "hospitalization", "disability", "congenital_anomaly",
            "important_medical_event"]  # fmt: skip
FATAL = {"ctcae_grade": 5, "outcome": "fatal", "serious": True, "relatedness": "possible",
         "expectedness": "unexpected", "seriousness_criteria": CRITERIA}  # fmt: skip
TERM = (
    "Acute kidney injury with perirenal haematoma requiring nephrectomy after intra-renal injection"
)


def test_a_fatal_related_sae_with_a_long_term_raises_every_alert_with_a_summary_title() -> None:
    # the review's 94-character term made a 230-character title, refused by the contract
    events = a_participant("DN-101").enrolled().dosed().ae(term=TERM, **FATAL).events()
    alerts = [a for a in run_all(events, RulesConfig(), None) if isinstance(a, AlertRaised)]
    assert [a.rule_id for a in alerts] == ["sae.reported", "susar.clock", "trial.stopping_rule"]
    sae = alerts[0]
    assert len(sae.title) == NAME_MAX and sae.title.endswith(ELLIPSIS)
    assert sae.title.startswith(f"Serious AE: {TERM[:40]}")


def test_evaluate_prints_the_alerts_of_a_fatal_sae_with_a_2000_character_term(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = a_participant("DN-101").enrolled().dosed().ae(term="x", **FATAL).events()
    lines = [json.loads(encode(e)) for e in events]
    lines[-1]["term"] = ("Haematoma\r\n" * 200)[:TEXT_MAX]  # a recorded term: decode takes it
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["evaluate", str(path)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["rule_id"] for a in out] == ["sae.reported", "susar.clock", "trial.stopping_rule"]
    assert all("\n" not in a["title"] and len(a["title"]) <= NAME_MAX for a in out)


def test_a_correction_with_the_longest_reason_withdraws_its_alert() -> None:
    p = a_participant("DN-102").enrolled().dosed().ae(serious=True, ctcae_grade=3)
    events = p.corrected(2, reason="r" * TEXT_MAX, serious=False, seriousness_criteria=[]).events()
    out = run_all(events, RulesConfig(), None)
    (withdrawn,) = [w for w in out if isinstance(w, AlertWithdrawn)]
    assert withdrawn.rule_id == "sae.reported"
    assert len(withdrawn.reason) == TEXT_MAX and withdrawn.reason.endswith(ELLIPSIS)


def test_the_engine_failing_on_an_event_raises_engine_failed_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dose recorded with a weight of 0 kg (decoded as recorded: the door's bound came later)
    makes the dose rule divide by zero. The event is left out, a critical alert names it, and
    the participant's later events are judged as if it had not come."""
    p = a_participant("DN-103").enrolled().dosed().baseline("creatinine", 1.0, day=-3)
    events = p.lab("creatinine", 1.5, day=20, visit="M1").events()
    dose = json.loads(encode(events[1]))
    dose["weight_kg"] = 0
    events[1] = decode(json.dumps(dose))
    path = tmp_path / "events.jsonl"
    path.write_text("".join(encode(e).decode() + "\n" for e in events))
    assert main(["evaluate", str(path)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = out[0]
    assert (failed["rule_id"], failed["severity"]) == ("engine.failed", "critical")
    assert failed["evidence"] == [dose["event_id"]] and failed["participant_id"] == "DN-103"
    assert failed["facts"] == {"event_type": "dose.administered", "error": "ZeroDivisionError"}
    assert "creatinine.aki" in [a["rule_id"] for a in out[1:]]  # the rise after it still told
