"""Writes one JSONL scenario per rule (and expected.json) from the builders.

    .venv/bin/python -m tests.scenarios.make_scenarios

Each file runs through `safety-monitor evaluate FILE --as-of AS_OF`; tests/unit/safety_rules/
test_scenarios.py checks the alerts against expected.json.
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
        "lab.egfr_mismatch": (
            p().lab("creatinine", 1.0, day=30, visit="M1").lab("egfr", 75, day=30, visit="M1")
            .events(),
            [["lab.egfr_mismatch", "info"]],
        ),
    }  # fmt: skip


def main() -> None:
    expected = {}
    for rule, (events, alerts) in scenarios().items():
        (HERE / f"{rule}.jsonl").write_text("".join(encode(e).decode() + "\n" for e in events))
        expected[f"{rule}.jsonl"] = {"as_of": AS_OF.isoformat(), "alerts": alerts}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
