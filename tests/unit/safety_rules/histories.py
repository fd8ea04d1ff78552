"""Hypothesis strategies for participant histories as a trial produces them, and their arrivals.

A history is one participant's events in clinical order: an enrolment (at a site in UTC, UTC+7
or UTC-5), baseline labs, one dose (sometimes a second), visits with creatinine, reported eGFR,
UACR and TNF-alpha results (some censored, some corrected), and AEs with their follow-ups (some
unassessed, some fatal). Every event of a participant has its own clinical time. An arrival is
any order of the same events in which the enrolment comes first and a correction after what it
corrects (a site cannot correct a record it has not entered).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from contracts import ClinicalEvent, parse_event

# 20:00 UTC is the next day at a UTC+7 site, and baseline samples fall on 31 December / 1 January:
# birthdays there tell a site's calendar date from the UTC one
T0 = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
ZONES = (UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-5)))
BIRTHDAYS = ("12-31", "01-01", "01-05", "01-06")
VISITS = (("M1", 30), ("M3", 91), ("M6", 182), ("M9", 273), ("M12", 365))
UNITS = {"creatinine": "mg/dL", "egfr": "mL/min/1.73m2", "uacr": "mg/g", "tnf_alpha": "pg/mL"}
RANGES = {"creatinine": (0.5, 6.0), "egfr": (8.0, 120.0), "uacr": (5.0, 900.0),
          "tnf_alpha": (1.0, 60.0)}  # fmt: skip


class _History:
    def __init__(self, pid: str, zone: timezone) -> None:
        self.pid, self.zone = pid, zone
        self.events: list[dict[str, Any]] = []
        self.minute = 0

    def add(self, event_type: str, day: float, **fields: Any) -> dict[str, Any]:
        self.minute += 1  # every event its own clinical time
        at = (T0 + timedelta(days=day, minutes=self.minute)).astimezone(self.zone)
        event = {
            "event_type": event_type,
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.pid}/{len(self.events)}")),
            "trial_id": "UCMSC-DN-01",
            "participant_id": self.pid,
            "occurred_at": at.isoformat(),
            "recorded_at": (at + timedelta(hours=2)).isoformat(),
            "recorded_by": "site:test",
            "source": "test",
            **fields,
        }
        self.events.append(event)
        return event


@st.composite
def lab_value(draw: st.DrawFn, analyte: str) -> dict[str, Any]:
    lo, hi = RANGES[analyte]
    value = round(draw(st.floats(lo, hi)), 2)
    comparator = draw(st.sampled_from([None, None, None, None, "<", ">"]))
    return {"analyte": analyte, "value": value, "unit": UNITS[analyte],
            **({"comparator": comparator} if comparator else {})}  # fmt: skip


@st.composite
def history(draw: st.DrawFn, pid: str = "DN-001") -> list[ClinicalEvent]:
    """One participant's events in clinical order."""
    h = _History(pid, draw(st.sampled_from(ZONES)))
    born = draw(st.booleans())
    h.add("participant.enrolled", -20, sex=draw(st.sampled_from(["F", "M"])), site_id="s1",
          enrolled_at=(T0 - timedelta(days=20)).astimezone(h.zone).isoformat(), weight_kg=70,
          **({"birth_date": f"{draw(st.integers(1961, 1985))}-{draw(st.sampled_from(BIRTHDAYS))}"}
             if born else {"age_years": draw(st.integers(40, 65))}))  # fmt: skip
    labs: list[dict[str, Any]] = []
    for analyte in draw(st.lists(st.sampled_from(sorted(UNITS)), max_size=4, unique=True)):
        labs.append(h.add("lab.resulted", -5, visit="baseline", **draw(lab_value(analyte))))
    h.add("dose.administered", 0, cells_total=draw(st.sampled_from([70e6, 90e6])), weight_kg=70,
          lot="L1")  # fmt: skip
    visits = VISITS[: draw(st.integers(1, len(VISITS)))]
    second_dose = draw(st.sampled_from([None, *[d for _, d in visits]]))
    for visit, day in visits:
        if day == second_dose:
            h.add("dose.administered", day - 3, cells_total=70e6, weight_kg=70, lot="L2")
        h.add("visit.completed", day, visit=visit)
        for analyte in draw(st.lists(st.sampled_from(sorted(UNITS)), max_size=4, unique=True)):
            labs.append(h.add("lab.resulted", day + draw(st.floats(0, 2)), visit=visit,
                              **draw(lab_value(analyte))))  # fmt: skip
    for n in range(draw(st.integers(0, 2))):
        ae = _ae(draw, f"AE-{n}")
        h.add("ae.reported", draw(st.integers(1, 200)), **ae)
        if draw(st.booleans()):
            h.add("ae.updated", draw(st.integers(201, 300)), **{**ae, **_ae(draw, f"AE-{n}")})
    events = sorted(h.events, key=lambda e: e["occurred_at"])
    for lab in draw(st.lists(st.sampled_from(labs), max_size=2, unique_by=id)) if labs else []:
        fixed = {**lab, **draw(lab_value(lab["analyte"])), "reason": "transcription error",
                 "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{lab['event_id']}/fix")),
                 "supersedes": lab["event_id"]}  # fmt: skip
        events.insert(
            events.index(lab) + 1, fixed
        )  # corrections come right after in clinical order
    return [parse_event(e) for e in events]  # type: ignore[misc]


def _ae(draw: st.DrawFn, ae_id: str) -> dict[str, Any]:
    outcome = draw(st.sampled_from(["recovering", "recovered", "not_recovered", "fatal"]))
    grade = 5 if outcome == "fatal" else draw(st.integers(1, 4))
    criteria = draw(
        st.lists(
            st.sampled_from(["hospitalization", "life_threatening", "important_medical_event"]),
            max_size=2,
            unique=True,
        )
    )
    serious = outcome == "fatal" or bool(criteria)
    if outcome == "fatal" and not criteria:
        criteria = ["death"]
    return {
        "ae_id": ae_id, "term": "Flank pain", "onset_date": "2026-02-01", "ctcae_grade": grade,
        "serious": serious, "seriousness_criteria": sorted(criteria) if serious else [],
        "relatedness": draw(st.sampled_from(["not_related", "possible", "not_assessed"])),
        "expectedness": draw(st.sampled_from(["expected", "unexpected", None])),
        "outcome": outcome,
    }  # fmt: skip


@st.composite
def arrival(draw: st.DrawFn, events: list[ClinicalEvent]) -> list[ClinicalEvent]:
    """The same events in an arrival order a site could produce."""
    order = list(draw(st.permutations(events[1:])))
    for fix in [e for e in order if e.supersedes is not None]:
        original = next(i for i, e in enumerate(order) if e.event_id == fix.supersedes)
        if order.index(fix) < original:
            order.remove(fix)
            order.insert(original, fix)  # just after its original, which moved down by one
    return [events[0], *order]
