"""`safety-monitor evaluate` over the checked-in scenario files, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main
from tests.scenarios import make_scenarios

SCENARIOS = Path(make_scenarios.__file__).parent
EXPECTED = json.loads((SCENARIOS / "expected.json").read_text())


def evaluate(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[dict[str, object]], str]:
    code = main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_there_is_a_scenario_for_every_rule() -> None:
    from services.safety_rules.domain.engine import ALL_RULE_IDS

    assert set(ALL_RULE_IDS) <= {name.removesuffix(".jsonl") for name in EXPECTED}


def test_the_checked_in_scenarios_are_current() -> None:
    every = {**make_scenarios.scenarios(), **make_scenarios.semantics()}
    for rule, (events, _) in every.items():
        lines = (SCENARIOS / f"{rule}.jsonl").read_text().splitlines()
        assert len(lines) == len(events), "regenerate: python -m tests.scenarios.make_scenarios"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_scenario_raises_its_rule(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, alerts, err = evaluate(capsys, str(SCENARIOS / name), "--as-of", EXPECTED[name]["as_of"])
    assert code == 0, err
    # a withdrawal (a correction removed the evidence) reads as [rule, "withdrawn"]
    got = [[a["rule_id"], a.get("severity", "withdrawn")] for a in alerts]
    assert got == EXPECTED[name]["alerts"]
    for a in alerts:
        if a["event_type"] == "alert.raised":
            assert {
                "alert_id",
                "rule_id",
                "severity",
                "participant_id",
                "title",
                "evidence",
            } <= set(a)
        else:
            assert a["event_type"] == "alert.withdrawn" and a["withdrawn_by"] and a["reason"]


def test_trial_level_alerts_carry_a_null_participant(capsys: pytest.CaptureFixture[str]) -> None:
    name = "trial.stopping_rule.jsonl"
    _, alerts, _ = evaluate(capsys, str(SCENARIOS / name))
    (trial,) = [a for a in alerts if a["rule_id"] == "trial.stopping_rule"]
    assert trial["participant_id"] is None


def test_as_of_defaults_to_the_latest_event_time(capsys: pytest.CaptureFixture[str]) -> None:
    _, alerts, _ = evaluate(capsys, str(SCENARIOS / "visit.overdue.jsonl"))
    assert alerts == []  # the dose is the last event: no window has closed at that moment
    _, alerts, _ = evaluate(
        capsys, str(SCENARIOS / "visit.overdue.jsonl"), "--as-of", "2027-06-01T00:00:00+00:00"
    )
    assert [a["thresholds"]["visit"] for a in alerts] == ["M1", "M3", "M6", "M9", "M12"]


def test_a_malformed_line_stops_with_its_number_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (SCENARIOS / "sae.reported.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    bad["value"] = "high"
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                lines[0],
                json.dumps({**bad, "analyte": "creatinine", "event_type": "lab.resulted"}),
                lines[2],
            ]
        )
    )
    code, alerts, err = evaluate(capsys, str(events))
    assert code == 1 and alerts == []
    assert "line 2:" in err


def test_an_alert_in_the_event_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, alerts, _ = evaluate(capsys, str(SCENARIOS / "dose.deviation.jsonl"))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(alerts[0]) + "\n")
    code, _, err = evaluate(capsys, str(events))
    assert code == 1 and "line 1: event_type: alert.raised is not a clinical event" in err


def test_a_naive_as_of_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = evaluate(capsys, str(SCENARIOS / "visit.overdue.jsonl"), "--as-of", "2026-06-01")
    assert code == 2 and "time zone" in err
