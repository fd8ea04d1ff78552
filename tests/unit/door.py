"""Hypothesis strategies for what the door accepts: events of every clinical type with each field
drawn up to its bounds (the longest strings, any character the contract takes, control
characters and line breaks included, every enum, the earliest and latest accepted instants,
values at the edges of their ranges). Every event drawn is accepted by `contracts.parse_event`
with the ingest window: a strategy that drew what the door refuses would test nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from contracts import ClinicalEvent, parse_event
from contracts.clinical import (
    AGE_MIN,
    AeOutcome,
    Comparator,
    Expectedness,
    Locality,
    Relatedness,
    SeriousnessCriterion,
    Visit,
)
from contracts.common import NAME_MAX, TEXT_MAX

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 7, tzinfo=UTC)
LATEST = NOW + timedelta(days=1)
WINDOW = (EARLIEST, LATEST)

# Any character the contract takes (not lone surrogates: no JSON text can carry one to the door),
# with line breaks, tabs, NUL, bidi overrides and zero-width characters drawn often.
_ODD = "\r\n\t\x00\x0b\x0c\x1b\x7f\u0085\u2028\u2029\u202e\u200b\ufeff <>&\"'%{}=\\"
_CHAR = st.one_of(st.sampled_from(_ODD), st.characters(exclude_categories=["Cs"]))


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any text the door takes for a field of `max_size`, often at that size."""
    body = st.text(_CHAR, min_size=1, max_size=max_size)
    longest = st.text(_CHAR, min_size=max_size, max_size=max_size)
    return st.one_of(body, longest)


def instants(earliest: datetime = EARLIEST, latest: datetime = LATEST) -> st.SearchStrategy[str]:
    """An accepted instant, in any offset, the window's ends drawn often."""
    at = st.one_of(
        st.sampled_from([earliest, latest, NOW]),
        st.datetimes(
            earliest.replace(tzinfo=None), latest.replace(tzinfo=None), timezones=st.just(UTC)
        ),
    )
    offset = st.integers(-14 * 60, 14 * 60).map(lambda m: timedelta(minutes=m))
    return st.tuples(at, offset).map(lambda t: t[0].astimezone(timezone(t[1])).isoformat())


LAB_RANGES = {  # canonical unit, (low, high) as the contract bounds them
    "creatinine": ("mg/dL", (0.1, 30.0)),
    "egfr": ("mL/min/1.73m2", (1.0, 250.0)),
    "uacr": ("mg/g", (0.0, 30000.0)),
    "tnf_alpha": ("pg/mL", (0.0, 10000.0)),
    "il_10": ("pg/mL", (0.0, 10000.0)),
}


class _Participant:
    def __init__(self, pid: str, trial: str, n: int) -> None:
        self.pid, self.trial, self.n = pid, trial, n

    def envelope(self, draw: st.DrawFn, event_type: str, **fields: Any) -> dict[str, Any]:
        self.n += 1
        return {
            "event_type": event_type,
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.pid}/{self.n}")),
            "trial_id": self.trial,
            "participant_id": self.pid,
            "occurred_at": draw(instants()),
            "recorded_at": draw(instants()),
            "recorded_by": draw(text(NAME_MAX)),
            "source": draw(st.sampled_from(["api", "fhir", "sdtm", "test"])),
            **fields,
        }


@st.composite
def enrolment(draw: st.DrawFn, p: _Participant) -> dict[str, Any]:
    enrolled = datetime.fromisoformat(draw(instants(EARLIEST + timedelta(days=366 * 121))))
    on = enrolled.date()
    by_birth = draw(st.booleans())
    age = draw(st.sampled_from([AGE_MIN, 120, 50]) | st.integers(AGE_MIN, 120))
    born = _birthday(on, age)
    return p.envelope(
        draw, "participant.enrolled", sex=draw(st.sampled_from(["F", "M"])),
        site_id=draw(text(NAME_MAX)), enrolled_at=enrolled.isoformat(),
        weight_kg=draw(st.sampled_from([20.000001, 350.0, 70.0])),
        **({"birth_date": born.isoformat()} if by_birth else {"age_years": age}),
    )  # fmt: skip


def _birthday(on: date, age: int) -> date:
    """A birth date that makes `age` whole years on `on` (the day after the birthday age+1)."""
    try:
        return on.replace(year=on.year - age)
    except ValueError:  # 29 February
        return date(on.year - age, 2, 28)


@st.composite
def clinical_event(draw: st.DrawFn, p: _Participant) -> dict[str, Any]:
    kind = draw(st.sampled_from(["dose", "visit", "lab", "ae", "ae", "ae"]))
    if kind == "dose":
        return p.envelope(
            draw, "dose.administered",
            cells_total=draw(st.sampled_from([1e-300, 1e12, 7e7]) | st.floats(1e-6, 1e12)),
            weight_kg=draw(st.sampled_from([20.000001, 350.0]) | st.floats(20.5, 350)),
            lot=draw(text(NAME_MAX)),
        )  # fmt: skip
    if kind == "visit":
        return p.envelope(draw, "visit.completed", visit=draw(st.sampled_from(list(Visit))).value)
    if kind == "lab":
        analyte = draw(st.sampled_from(sorted(LAB_RANGES)))
        unit, (lo, hi) = LAB_RANGES[analyte]
        comparator = draw(st.none() | st.sampled_from([c.value for c in Comparator]))
        return p.envelope(
            draw, "lab.resulted", analyte=analyte, unit=unit,
            value=draw(st.sampled_from([lo, hi]) | st.floats(lo, hi)),
            visit=draw(st.none() | st.sampled_from([v.value for v in Visit])),
            **({"comparator": comparator} if comparator else {}),
        )  # fmt: skip
    grade = draw(st.integers(1, 5))
    outcome = AeOutcome.FATAL if grade == 5 else draw(st.sampled_from(list(AeOutcome)))
    criteria = draw(st.lists(st.sampled_from(list(SeriousnessCriterion)), unique=True))
    if outcome is AeOutcome.FATAL and not criteria:
        criteria = [SeriousnessCriterion.DEATH]
    return p.envelope(
        draw, draw(st.sampled_from(["ae.reported", "ae.updated"])),
        ae_id=draw(st.sampled_from(["AE-1", "AE-2"]) | text(NAME_MAX)),
        term=draw(text(NAME_MAX)),
        onset_date=draw(st.sampled_from(["1900", "2026-02", "2026-12-08"])),
        ctcae_grade=grade, serious=bool(criteria),
        seriousness_criteria=[c.value for c in criteria],
        relatedness=draw(st.sampled_from(list(Relatedness))).value,
        expectedness=draw(st.none() | st.sampled_from([e.value for e in Expectedness])),
        local_or_systemic=draw(st.none() | st.sampled_from([x.value for x in Locality])),
        outcome=outcome.value,
        **({"aware_at": draw(instants())} if draw(st.booleans()) else {}),
    )  # fmt: skip


@st.composite
def correction(draw: st.DrawFn, p: _Participant, of: dict[str, Any]) -> dict[str, Any]:
    """`of` again under a new id, superseding it, with the longest reason the door takes."""
    p.n += 1
    return {
        **of,
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{p.pid}/{p.n}")),
        "supersedes": of["event_id"],
        "reason": "r" + draw(text(TEXT_MAX - 1)),
    }


@st.composite
def accepted_history(draw: st.DrawFn, max_events: int = 12) -> list[ClinicalEvent]:
    """One participant's events, every one accepted at the door, in an order a site could send."""
    pid = draw(st.sampled_from(["DN-101", "01-701-1015", "9" * 64]))
    p = _Participant(pid, draw(st.sampled_from(["UCMSC-DN-01"]) | text(NAME_MAX)), 0)
    raw = [draw(enrolment(p))]
    for _ in range(draw(st.integers(0, max_events))):
        event = draw(clinical_event(p))
        raw.append(event)
        if draw(st.integers(0, 5)) == 0:
            raw.append(draw(correction(p, event)))
    return [parse_event(e, window=WINDOW) for e in raw]  # type: ignore[misc]
