"""The DSMB report's numbers on a fixture trial whose answers were computed by hand.

Six participants enrolled, five dosed on 2026-01-10 (day 0), P6 never dosed; P9 has an AE but no
enrolment on the trail. eGFR is the site's reported eGFR (no creatinine beside it) except P4's,
computed from creatinine with CKD-EPI 2021 (male, 50 years: Scr 1.0 -> 91.69, DESIGN's example).

eGFR (mL/min/1.73 m2), baseline on day -5:
    P1  60   M1 day 30: 54 (-6), and day 36: 50 (same window, further from day 30: left out)
             M3 day 90: 48 (-12)
    P2  70   day 28, labelled "unscheduled": 73 (+3, M1: the date decides)
             M3 day 95: 63 (-7); day 200, unlabelled: 58 (outside every window, no label)
    P3  50   labelled M1 but taken on day 60: outside every window (counted in M1's cell)
             M3 day 91: "<15" (censored)
    P4  91.69 (Scr 1.0)  M1 day 30: Scr 1.0 again -> change 0 (age 50 at both)
    P5  no baseline      M1 day 30: 80 (no baseline)
    P6  no dose          labelled M1: 40 (no dose recorded)

  M1 changes -6, +3, 0: n 3, mean -1, SD sqrt(42/2) = 4.583, median 0,
     IQR (inclusive quartiles, positions 0.5 and 1.5) -3 to 1.5;
     excluded 4: nearer 1 (P1 day 36), outside 1 (P3), no baseline 1 (P5), no dose 1 (P6).
  M3 changes -12, -7: n 2, mean -9.5, SD sqrt(12.5) = 3.536, median -9.5, IQR -10.75 to -8.25;
     excluded 1: censored (P3).
  Unplaced: 1 outside every window (P2 day 200).
  Shift, baseline -> last result after the dose: P1 G2 -> G3a (48), P2 G2 -> G3a (58),
     P4 G1 -> G1, P3 G3a -> G5 ("<15" proves G5); not classified: no baseline 2 (P5, P6).

UACR (mg/g), baseline on day -5:
    P1  20 (A1)   M1 day 31: 50 (+30)    M3 day 92: 400 (+380, A3)
    P2  100 (A2)  M1 day 29: 80 (-20)    M3 day 90: 120 (+20)
    P3  "<3"      M1 day 30: 10 (baseline censored)
    P4  35 (A2)   day 33, no visit label (as a FHIR lab comes): 35 (0, M1 by its date)
  M1 changes 30, -20, 0: n 3, mean 3.333, SD sqrt(3800/3 / 2) = 25.166, median 0,
     IQR -10 to 15; excluded 1: baseline censored (P3).
  M3 changes 380, 20: n 2, mean 200, SD sqrt(64800) = 254.558, median 200, IQR 110 to 290.
  Shift: A1 -> A3 1 (P1), A2 -> A2 2 (P2, P4), A1 -> A1 1 (P3: "<3" proves A1, then 10).

AEs (6 enrolled): P1 grade 2 related local (api) and grade 3 SAE, relatedness not assessed,
systemic (api); P2 grade 1 not related, locality not recorded (fhir); P3 grade 5 fatal SAE,
probable, locality not recorded (sdtm); P9 (not enrolled) one AE.
  Any AE 3 (50%), any SAE 2 (33.3%), grade >= 3 2, related 2 (P1, P3), related SAE 1 (P3),
  relatedness not assessed 1, local 1, systemic 1, locality not recorded 2, death 1.

Clocks (cut-off 2026-03-05T00:00Z): P1's SAE aware 02-01 08:00, due 02-02 08:00, acknowledged
02-01 20:00: met. P3's SAE aware 03-01 00:00, due 03-02 00:00, acknowledged 03-02 06:00: missed.
P3's SUSAR (7 days, fatal) due 03-08: open. P1's SUSAR (15 days) due 02-16 08:00, never
acknowledged: missed. Alert response: egfr.decline 3 alerts (critical 1, high 2), 2 acknowledged
2.5 h and 4 h after they were raised (median 3.25), 1 withdrawn; sae.reported 2, 11 h and 20 h
(median 15.5, upper quartile 11 + 0.75 x 9 = 17.75): measured from the alert's raising, not
from the sample's clinical time.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from clinical.kdigo import a_category, g_category
from services.audit.domain.outcomes import (
    Excluded,
    Sample,
    ae_summary,
    alert_response,
    change_from_baseline,
    clocks,
    first_dose,
    lab_series,
    outcomes,
    proven_category,
    shift_table,
    trials,
)

DOSE = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 3, 5, tzinfo=UTC)


def day(n: int, hour: int = 9) -> datetime:
    return DOSE.replace(hour=hour) + timedelta(days=n)


def person(pid: str, *, dosed: bool = True) -> dict[str, Any]:
    return {
        "participant_id": pid,
        "trial_id": "UCMSC-DN-01",
        "site_id": "sardjito",
        "sex": "M",
        "birth_date": "1975-06-01",  # 50 throughout January to March 2026
        "age_years": None,
        "enrolled_at": datetime(2025, 12, 20, tzinfo=UTC),
        "enrolled_on": "2025-12-20",
        "dose_at": DOSE if dosed else None,
        "dose_on": DOSE.date().isoformat() if dosed else None,
    }


def lab(
    pid: str, analyte: str, n: int, value: float, visit: str | None, comparator: str | None = None
) -> dict[str, Any]:
    at = day(n)
    return {
        "event_id": f"{pid}/{analyte}/{n}/{value}",
        "participant_id": pid,
        "analyte": analyte,
        "value": value,
        "comparator": comparator,
        "visit": visit,
        "occurred_at": at,
        "sample_date": at.date().isoformat(),
        "superseded_by": None,
    }


PARTICIPANTS = {p["participant_id"]: p for p in [
    person("P1"), person("P2"), person("P3"), person("P4"), person("P5"),
    person("P6", dosed=False),
]}  # fmt: skip
LABS = [
    lab("P1", "egfr", -5, 60, "baseline"), lab("P1", "egfr", 30, 54, "M1"),
    lab("P1", "egfr", 36, 50, "M1"), lab("P1", "egfr", 90, 48, "M3"),
    lab("P2", "egfr", -5, 70, "baseline"), lab("P2", "egfr", 28, 73, "unscheduled"),
    lab("P2", "egfr", 95, 63, "M3"), lab("P2", "egfr", 200, 58, None),
    lab("P3", "egfr", -5, 50, "baseline"), lab("P3", "egfr", 60, 45, "M1"),
    lab("P3", "egfr", 91, 15, "M3", "<"),
    lab("P4", "creatinine", -5, 1.0, "baseline"), lab("P4", "creatinine", 30, 1.0, "M1"),
    lab("P5", "egfr", 30, 80, "M1"),
    lab("P6", "egfr", 30, 40, "M1"),
    lab("P1", "uacr", -5, 20, "baseline"), lab("P1", "uacr", 31, 50, "M1"),
    lab("P1", "uacr", 92, 400, "M3"),
    lab("P2", "uacr", -5, 100, "baseline"), lab("P2", "uacr", 29, 80, "M1"),
    lab("P2", "uacr", 90, 120, "M3"),
    lab("P3", "uacr", -5, 3, "baseline", "<"), lab("P3", "uacr", 30, 10, "M1"),
    lab("P4", "uacr", -5, 35, "baseline"), lab("P4", "uacr", 33, 35, None),
]  # fmt: skip
DOSES = {pid: first_dose(p) for pid, p in PARTICIPANTS.items()}


def ae(pid: str, ae_id: str, grade: int, serious: bool, relatedness: str, locality: str | None,
       source: str, outcome: str = "recovered", criteria: tuple[str, ...] = (),
       ) -> dict[str, Any]:  # fmt: skip
    return {
        "participant_id": pid,
        "ae_id": ae_id,
        "term": f"term of {ae_id}",
        "onset_date": "2026-02-01",
        "grade": grade,
        "serious": serious,
        "criteria": json.dumps(list(criteria)),
        "relatedness": relatedness,
        "related": relatedness in {"possible", "probable", "definite"},
        "locality": locality,
        "outcome": outcome,
        "source": source,
    }


AES = [
    ae("P1", "AE1", 2, False, "possible", "local", "api"),
    ae("P1", "AE2", 3, True, "not_assessed", "systemic", "api", criteria=("hospitalization",)),
    ae("P2", "AE3", 1, False, "not_related", None, "fhir"),
    ae("P3", "AE4", 5, True, "probable", None, "sdtm", "fatal", ("death",)),
    ae("P9", "AE5", 1, False, "unlikely", "local", "api"),
]


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def alert(rule: str, pid: str, severity: str = "critical", *, recorded: str, due: str | None = None,
          ack: str | None = None, status: str = "raised", facts: dict[str, Any] | None = None,
          ) -> dict[str, Any]:  # fmt: skip
    return {
        "rule_id": rule,
        "participant_id": pid,
        "severity": severity,
        "recorded_at": t(recorded),
        "due_by": t(due) if due else None,
        "acknowledged_at": t(ack) if ack else None,
        "status": "acknowledged" if ack else status,
        "facts": json.dumps(facts or {}),
        "trial_id": "UCMSC-DN-01",
    }


ALERTS = [
    alert("sae.reported", "P1", recorded="2026-02-01T09:00", due="2026-02-02T08:00",
          ack="2026-02-01T20:00", facts={"ae_id": "AE2", "aware_at": "2026-02-01T08:00:00+00:00"}),
    alert("sae.reported", "P3", recorded="2026-03-01T10:00", due="2026-03-02T00:00",
          ack="2026-03-02T06:00", facts={"ae_id": "AE4", "aware_at": "2026-03-01T00:00:00+00:00"}),
    alert("susar.clock", "P3", recorded="2026-03-01T10:00", due="2026-03-08T00:00",
          facts={"ae_id": "AE4", "aware_at": "2026-03-01T00:00:00+00:00", "clock_days": 7}),
    alert("susar.clock", "P1", recorded="2026-02-01T09:00", due="2026-02-16T08:00",
          facts={"ae_id": "AE2", "aware_at": "2026-02-01T08:00:00+00:00", "clock_days": 15}),
    alert("egfr.decline", "P1", "high", recorded="2026-02-10T10:00", ack="2026-02-10T12:30"),
    alert("egfr.decline", "P2", recorded="2026-03-01T00:00", ack="2026-03-01T04:00"),
    alert("egfr.decline", "P3", "high", recorded="2026-03-03T00:00", status="withdrawn"),
]  # fmt: skip


@pytest.fixture(scope="module")
def series() -> Any:
    return lab_series(PARTICIPANTS, LABS)


def approx(x: float | None) -> Any:
    return pytest.approx(x, abs=5e-4)


def test_egfr_change_from_baseline_is_windowed_by_study_day(series: Any) -> None:
    out = change_from_baseline(series, DOSES, "egfr")
    m1, m3 = out.cells["M1"], out.cells["M3"]
    assert m1.changes == {"P1": -6, "P2": 3, "P4": approx(0)}
    s = m1.summary
    assert (s.n, s.mean, s.sd, s.median, s.q1, s.q3) == (
        3,
        approx(-1),
        approx(math.sqrt(21)),
        approx(0),
        approx(-3),
        approx(1.5),
    )
    assert m1.excluded == {
        Excluded.NEARER: 1,
        Excluded.OUTSIDE: 1,
        Excluded.NO_BASELINE: 1,
        Excluded.NO_DOSE: 1,
    }
    s = m3.summary
    assert (s.n, s.mean, s.sd, s.median, s.q1, s.q3) == (
        2,
        -9.5,
        approx(math.sqrt(12.5)),
        -9.5,
        -10.75,
        -8.25,
    )
    assert m3.excluded == {Excluded.CENSORED: 1}
    assert out.unplaced == {Excluded.OUTSIDE: 1}
    assert out.baselines["P4"] is not None
    assert out.baselines["P4"].value == approx(91.6915)  # CKD-EPI 2021, the rules' formula
    assert [c.summary.n for c in out.cells.values()] == [3, 2, 0, 0, 0]


def test_uacr_change_from_baseline(series: Any) -> None:
    out = change_from_baseline(series, DOSES, "uacr")
    s = out.cells["M1"].summary
    assert (s.n, s.mean, s.sd, s.median, s.q1, s.q3) == (
        3,
        approx(10 / 3),
        approx(math.sqrt(3800 / 3 / 2)),
        0,
        -10,
        15,
    )
    assert out.cells["M1"].excluded == {Excluded.BASELINE_CENSORED: 1}
    s = out.cells["M3"].summary
    assert (s.n, s.mean, s.sd, s.median, s.q1, s.q3) == (
        2,
        200,
        approx(math.sqrt(64800)),
        200,
        110,
        290,
    )
    assert out.cells["M3"].n_excluded == 0


def test_shift_tables_from_baseline_to_the_last_result(series: Any) -> None:
    g = shift_table(series, DOSES, "egfr")
    assert dict(g.counts) == {("G2", "G3a"): 2, ("G1", "G1"): 1, ("G3a", "G5"): 1}
    assert g.not_classified == {"no baseline": 2}
    a = shift_table(series, DOSES, "uacr")
    assert dict(a.counts) == {("A1", "A3"): 1, ("A2", "A2"): 2, ("A1", "A1"): 1}
    assert a.not_classified == {}
    assert (g.n, a.n) == (4, 4)


@pytest.mark.parametrize(
    ("value", "comparator", "cat", "category"),
    [
        (15, "<", g_category, "G5"), (60, "<", g_category, None), (90, ">=", g_category, "G1"),
        (89, ">", g_category, None), (300, ">", a_category, "A3"), (300, ">=", a_category, None),
        (30, "<", a_category, "A1"), (30, "<=", a_category, None), (45, None, g_category, "G3a"),
    ],
)  # fmt: skip
def test_a_censored_result_has_a_category_only_when_its_bound_proves_one(
    value: float, comparator: str | None, cat: Any, category: str | None
) -> None:
    sample = Sample(DOSE, value, None, comparator)
    assert proven_category(sample, cat) == category


def test_ae_counts_and_percentages_and_locality_not_recorded() -> None:
    s = ae_summary(PARTICIPANTS, AES)
    assert s.enrolled == 6
    assert dict(s.participants) == {
        "Any AE": 3,
        "Any SAE": 2,
        "Any AE of CTCAE grade 3 or more": 2,
        "Any related AE (possible or stronger)": 2,
        "Any related SAE": 1,
        "Any AE with relatedness not yet assessed": 1,
        "Any local AE": 1,
        "Any systemic AE": 1,
        "Any AE with locality not recorded": 2,
        "Death": 1,
    }
    assert [s.pct(n) for n in (3, 2)] == [50.0, approx(33.333)]
    assert dict(s.by_locality) == {
        ("api", "local"): 1, ("api", "systemic"): 1,
        ("fhir", "not recorded"): 1, ("sdtm", "not recorded"): 1,
    }  # fmt: skip
    assert s.by_grade[(3, True, "not assessed")] == 1
    assert s.by_grade[(5, True, "related")] == 1
    assert sum(s.by_grade.values()) == 4
    assert s.not_enrolled == 1


def test_regulatory_clocks_met_missed_open() -> None:
    rows = clocks(ALERTS, AES, CUTOFF)
    assert [(c.label, c.participant_id, c.term, c.state) for c in rows] == [
        ("SAE, 24 h", "P1", "term of AE2", "met"),
        ("SUSAR", "P1", "term of AE2", "missed"),
        ("SAE, 24 h", "P3", "term of AE4", "missed"),
        ("SUSAR", "P3", "term of AE4", "open"),
    ]
    assert rows[0].aware_at == t("2026-02-01T08:00")
    assert rows[0].due_by == t("2026-02-02T08:00")
    assert rows[0].stopped_at == t("2026-02-01T20:00")


def test_alert_response_counts_hours_from_raised_to_acknowledged() -> None:
    by_rule = {r.rule_id: r for r in alert_response(ALERTS)}
    egfr = by_rule["egfr.decline"]
    assert (egfr.alerts, egfr.by_severity, egfr.acknowledged, egfr.withdrawn) == (
        3,
        {"critical": 1, "high": 2},
        2,
        1,
    )
    assert (egfr.hours_to_ack.n, egfr.hours_to_ack.median) == (2, 3.25)
    sae = by_rule["sae.reported"]
    assert (sae.acknowledged, sae.hours_to_ack.median, sae.hours_to_ack.q3) == (2, 15.5, 17.75)
    assert by_rule["susar.clock"].hours_to_ack.n == 0


def test_the_study_day_counts_in_the_sites_calendar() -> None:
    """A site at UTC+7 injects on 10 January at 09:00 and samples on 17 February at 06:00 (22:59
    on the 16th in UTC): day 38 at the site, outside M1 (23-37), though day 37 in UTC."""
    seven = timezone(timedelta(hours=7))
    dosed_at = datetime(2026, 1, 10, 9, 0, tzinfo=seven)
    taken = datetime(2026, 2, 17, 6, 0, tzinfo=seven)
    p = {**person("S1"), "dose_at": dosed_at.astimezone(UTC), "dose_on": "2026-01-10"}
    rows = [
        {**lab("S1", "uacr", -5, 20, "baseline")},
        {**lab("S1", "uacr", 0, 50, None), "occurred_at": taken.astimezone(UTC),
         "sample_date": "2026-02-17"},
    ]  # fmt: skip
    out = change_from_baseline(lab_series({"S1": p}, rows), {"S1": first_dose(p)}, "uacr")
    assert out.cells["M1"].summary.n == 0
    assert out.unplaced == {Excluded.OUTSIDE: 1}


def test_a_report_is_one_trials_another_trials_rows_are_left_out() -> None:
    other = {**person("X1"), "trial_id": "CDISCPILOT01"}
    rows = [*PARTICIPANTS.values(), other]
    aes = [*AES, ae("X1", "AE-X", 4, True, "definite", None, "sdtm", criteria=("death",))]
    labs = [*LABS, lab("X1", "egfr", 30, 20, "M1"), lab("X1", "egfr", -5, 90, "baseline")]
    alerts = [*ALERTS, {**alert("sae.reported", "X1", recorded="2026-02-01T00:00"),
                        "trial_id": "CDISCPILOT01"}]  # fmt: skip
    o = outcomes(rows, labs, aes, alerts, CUTOFF, "UCMSC-DN-01")
    assert (o.enrolled, o.dosed, o.sites) == (6, 5, {"sardjito": 6})
    assert dict(o.aes.participants)["Any SAE"] == 2  # X1's fatal SAE is the other trial's
    assert o.aes.not_enrolled == 1  # P9: no enrolment anywhere, so shown in this one
    assert [m.cells["M1"].summary.n for m in o.measures if m.measure == "egfr"] == [3]
    assert len(o.clocks) == 4 and "X1" not in {c.participant_id for c in o.clocks}
    assert trials(rows) == ["CDISCPILOT01", "UCMSC-DN-01"]


def test_trajectories_mark_live_alerts_and_not_withdrawn_ones() -> None:
    from services.audit.report import figures

    alerts = [{**a, "raised_at": a["recorded_at"]} for a in ALERTS]
    o = outcomes(list(PARTICIPANTS.values()), LABS, AES, alerts, CUTOFF, "UCMSC-DN-01")
    _, panels = figures(o, alerts)
    svg = dict(panels)
    assert sorted(svg) == ["P1", "P2", "P3", "P4", "P5", "P6"]
    assert "alert: egfr.decline (high)" in svg["P1"]
    assert "alert: egfr.decline (critical)" in svg["P2"]
    assert "alert:" not in svg["P3"]  # its egfr.decline was withdrawn by a correction
    assert (
        "P4: eGFR, CKD-EPI 2021" in svg["P4"] and "Study day (days from the injection)" in svg["P4"]
    )
