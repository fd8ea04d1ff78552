"""Writes one JSONL scenario per rule (and expected.json) from the builders.

    .venv/bin/python -m tests.scenarios.make_scenarios

Each file runs through `safety-monitor evaluate FILE --as-of AS_OF`; tests/unit/safety_rules/
test_evaluate_cli.py checks the alerts against expected.json. A file's lines are in arrival order:
the `semantics.*` files are the findings of the rules issue (late, censored, unassessed, deaths),
where arrival order is not clinical order.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from contracts import ClinicalEvent, encode
from tests.unit.safety_rules.builders import DAY0, a_participant

HERE = Path(__file__).parent
AS_OF = DAY0 + timedelta(days=40)


def scenarios() -> dict[str, tuple[list[ClinicalEvent], list[list[str]]]]:
    def p(pid: str = "DN-001"):  # type: ignore[no-untyped-def]
        return a_participant(pid).enrolled(sex="M", age=50).dosed(day=0).visit("M1", day=30)

    sae = dict(serious=True, ctcae_grade=3)
    return {
        "sae.reported": (p().ae(**sae).events(), [["sae.reported", "critical"]]),
        "susar.clock": (
            p().ae(**sae, relatedness="probable", expectedness="unexpected",
                   seriousness_criteria=["life_threatening"]).events(),
            [["sae.reported", "critical"], ["susar.clock", "critical"]],
        ),
        "ae.severe": (p().ae(ctcae_grade=3).events(), [["ae.severe", "high"]]),
        "creatinine.aki": (
            p().baseline("creatinine", 1.0).lab("creatinine", 1.0, day=20)
            .lab("creatinine", 1.3, day=21).events(),
            [["creatinine.aki", "high"]],
        ),
        "egfr.decline": (
            p().baseline("egfr", 60).lab("egfr", 40, day=30, visit="M1").events(),
            [["egfr.decline", "high"]],
        ),
        "egfr.kidney_failure": (
            p().baseline("egfr", 18).lab("egfr", 14, day=30, visit="M1").events(),
            [["egfr.kidney_failure", "critical"]],
        ),
        "egfr.rapid_slope": (
            p().baseline("egfr", 60, day=-5).lab("egfr", 57, day=91).lab("egfr", 56, day=182)
            .events(),
            [["egfr.rapid_slope", "medium"]],
        ),
        "uacr.rise": (
            p().baseline("uacr", 150).lab("uacr", 320, day=30, visit="M1").events(),
            [["uacr.rise", "medium"]],
        ),
        "lab.discrepancy": (  # one sample by two routes, two values: the worse (1.15) stands
            p().baseline("creatinine", 1.0).lab("creatinine", 1.05, day=30, visit="M1")
            .lab("creatinine", 1.15, day=30, visit="M1").events(),
            [["lab.discrepancy", "info"]],
        ),
        "inflammation.rise": (
            p().baseline("tnf_alpha", 8).lab("tnf_alpha", 17, day=30, visit="M1").events(),
            [["inflammation.rise", "info"]],
        ),
        "dose.deviation": (
            a_participant().enrolled().dosed(day=0, cells_per_kg=1.5e6).visit("M1", 30).events(),
            [["dose.deviation", "high"]],
        ),
        "visit.overdue": (
            a_participant().enrolled().dosed(day=0).events(), [["visit.overdue", "medium"]]
        ),
        "trial.stopping_rule": (
            p("DN-001").ae(**sae, relatedness="possible").events()
            + p("DN-002").ae(**sae, relatedness="definite").events(),
            [["sae.reported", "critical"], ["sae.reported", "critical"],
             ["trial.stopping_rule", "critical"]],
        ),
        "dose.repeat": (
            a_participant().enrolled().dosed(day=0).visit("M1", 30).dosed(day=32).events(),
            [["dose.repeat", "high"]],
        ),
        "lab.egfr_mismatch": (
            p().lab("creatinine", 1.0, day=30, visit="M1").lab("egfr", 75, day=30, visit="M1")
            .events(),
            [["lab.egfr_mismatch", "info"]],
        ),
    }  # fmt: skip


def _late(events: list[ClinicalEvent], index: int) -> list[ClinicalEvent]:
    return [e for i, e in enumerate(events) if i != index] + [events[index]]


def semantics() -> dict[str, tuple[list[ClinicalEvent], list[list[str]]]]:
    """The findings of the rules issue, one story each, as a safety reviewer reproduced them."""

    def m(pid: str = "DN-001"):  # type: ignore[no-untyped-def]
        return a_participant(pid).enrolled(sex="M", age=50)

    sae = dict(serious=True, ctcae_grade=3)
    fixed = m().dosed(day=0).visit("M1", 30).baseline("creatinine", 1.0, day=-5)
    fixed.lab("creatinine", 1.9, day=30, visit="M1")
    typo = m().dosed(day=0).visit("M1", 30).baseline("creatinine", 2.0, day=-5)
    typo.lab("creatinine", 1.9, day=30, visit="M1")
    return {
        "semantics.1a-baseline-entered-late": (
            _late(m().dosed(day=0).visit("M1", 30).baseline("creatinine", 1.0, day=-5)
                  .lab("creatinine", 1.7, day=30, visit="M1").events(), 3),
            [["creatinine.aki", "high"], ["egfr.decline", "critical"]],
        ),
        "semantics.1b-earlier-sample-entered-second": (
            _late(m().dosed(day=0).visit("M1", 30).baseline("creatinine", 1.2, day=-5)
                  .lab("creatinine", 1.0, day=29.5).lab("creatinine", 1.45, day=30).events(), 4),
            [["creatinine.aki", "high"]],
        ),
        "semantics.1c-corrected-baseline": (
            typo.corrected(3, value=1.0).events(),
            [["creatinine.aki", "high"], ["egfr.decline", "critical"]],
        ),
        "semantics.1d-dose-recorded-after-labs": (
            _late(m().lab("creatinine", 1.0, day=-3).dosed(day=0)
                  .lab("creatinine", 1.9, day=30, visit="M1").visit("M1", 30).events(), 2),
            [["creatinine.aki", "high"], ["egfr.decline", "critical"]],
        ),
        "semantics.1e-correction-withdraws": (
            fixed.corrected(4, value=1.05).events(),
            [["creatinine.aki", "high"], ["egfr.decline", "critical"],
             ["creatinine.aki", "withdrawn"], ["egfr.decline", "withdrawn"]],
        ),
        "semantics.2a-egfr-below-15": (
            m().dosed(day=0).visit("M1", 30).lab("egfr", 15, day=30, comparator="<").events(),
            [["egfr.kidney_failure", "critical"]],
        ),
        "semantics.2b-uacr-above-3000": (
            m().baseline("uacr", 180).dosed(day=0).visit("M1", 30)
            .lab("uacr", 3000, day=30, comparator=">").events(),
            [["uacr.rise", "medium"]],
        ),
        "semantics.2c-tnf-alpha-censored-baseline": (
            m().lab("tnf_alpha", 2, day=-5, visit="baseline", comparator="<").dosed(day=0)
            .visit("M1", 30).lab("tnf_alpha", 80, day=30).events(),
            [["inflammation.rise", "info"]],
        ),
        "semantics.3-unassessed-causality-and-expectedness": (
            m().dosed(day=0).visit("M1", 30)
            .ae(**sae, relatedness="not_assessed", expectedness=None).events(),
            [["sae.reported", "critical"], ["susar.clock", "critical"]],
        ),
        "semantics.4-sae-updated-to-fatal": (
            m().dosed(day=0).visit("M1", 30).ae(**sae)
            .ae(updated=True, day=9, serious=True, ctcae_grade=5, outcome="fatal").events(),
            [["sae.reported", "critical"], ["sae.reported", "critical"]],
        ),
        "semantics.5a-a3-without-baseline": (
            m().lab("uacr", 250, day=20).lab("uacr", 320, day=50).events(),
            [["uacr.rise", "medium"]],
        ),
        "semantics.5b-ratio-of-exactly-1.5": (
            m().dosed(day=0).visit("M1", 30).baseline("creatinine", 1.10)
            .lab("creatinine", 1.65, day=30).events(),
            [["creatinine.aki", "high"], ["egfr.decline", "high"]],
        ),
    }  # fmt: skip


def main() -> None:
    expected = {}
    for rule, (events, alerts) in {**scenarios(), **semantics()}.items():
        (HERE / f"{rule}.jsonl").write_text("".join(encode(e).decode() + "\n" for e in events))
        expected[f"{rule}.jsonl"] = {"as_of": AS_OF.isoformat(), "alerts": alerts}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
