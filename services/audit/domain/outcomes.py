"""The DSMB report's numbers, pure: read-model rows in, tables out (no I/O, no clock: the data
cut-off is an argument). The rendering (`services/audit/report.py`) only formats what is here,
so every number a board member reads is asserted by `tests/unit/audit/test_outcomes.py`.

eGFR, age, baseline, KDIGO categories, "related" and the visit windows come from the clinical
kernel (`clinical/`), the same code the rules run, so the report and the alerts cannot disagree.

Results are placed by study day (days from the first dose at the site's calendar): each goes to
the visit whose window holds its date, nearest the target day when two qualify; the label only
breaks ties. Per participant and visit the result nearest the target day is the one summarised.
Every result that is not used is counted with its reason, in the cell of the visit whose window
(or, outside every window, whose label) it belongs to.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from clinical.age import age_on
from clinical.baseline import choose_baseline
from clinical.bounds import Bound
from clinical.egfr import egfr_bound, reported_egfr_stands
from clinical.kdigo import A_CATEGORIES, G_CATEGORIES, a_category, g_category
from clinical.specimen import minute, worst
from clinical.visits import PROTOCOL_WINDOWS, study_day, visit_for_day
from contracts import Sex
from services.audit.domain.course import Flow, SocTable, fatal, flow, soc_pt
from services.audit.domain.stats import Summary, summarise

Row = Mapping[str, Any]
VISITS = tuple(PROTOCOL_WINDOWS)
# measure -> (label, unit); "egfr" is the eGFR time line the rules read (see lab_series)
MEASURES: dict[str, tuple[str, str]] = {
    "egfr": ("eGFR, CKD-EPI 2021", "mL/min/1.73 m²"),
    "creatinine": ("Serum creatinine", "mg/dL"),
    "uacr": ("UACR", "mg/g"),
    "tnf_alpha": ("TNF-alpha", "pg/mL"),
    "il_10": ("IL-10", "pg/mL"),
}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def utc(v: Any) -> datetime | None:
    """A read-model time (SQLite returns naive UTC, PostgreSQL aware) as an aware UTC time."""
    if v is None:
        return None
    at: datetime = datetime.fromisoformat(v) if isinstance(v, str) else v
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _day(v: Any) -> date | None:
    return date.fromisoformat(v) if v else None


class FirstDose(NamedTuple):
    """The protocol's one injection: when (the baseline's cut) and its date at the site (day 0)."""

    at: datetime
    on: date


@dataclass(frozen=True)
class Sample:
    at: datetime
    value: float
    visit: str | None
    comparator: str | None = None  # `<`, `>`: a censored result, the value is its bound
    sample_date: date | None = None  # the date at the site (the study day counts in it)

    @property
    def censored(self) -> bool:
        return bool(self.comparator)

    @property
    def text(self) -> str:
        return f"{self.comparator or ''}{self.value:.3g}"

    def day(self, dose: FirstDose) -> int:
        """Its study day: days from the injection, by the site's calendar."""
        return study_day(self.sample_date or self.at.date(), dose.on)


def _age(p: Row, lab: Row, at: datetime) -> int | None:
    """Whole years at the sample's date at the site (clinical.age), as the engine counts them."""
    enrolled = utc(p["enrolled_at"])
    return age_on(
        _day(lab.get("sample_date")) or at.date(),
        birth_date=_day(p["birth_date"]),
        age_at_enrolment=p["age_years"],
        enrolled_on=_day(p.get("enrolled_on")) or (enrolled.date() if enrolled else None),
    )


def standing(labs: Iterable[Row]) -> set[str]:
    """The event ids of the results that stand, one per specimen (clinical.specimen: the same
    participant, analyte and collection minute from any route). Equal copies count once; of
    copies that disagree the worse value stands; once a correction touched a specimen, only the
    correction stands for it (as the rule engine settles it)."""
    groups: dict[tuple[str, str, datetime], list[Row]] = defaultdict(list)
    for lab in labs:
        at = utc(lab["occurred_at"])
        assert at is not None
        groups[(lab["participant_id"], lab["analyte"], minute(at))].append(lab)
    out: set[str] = set()
    for (_, analyte, _), rows in groups.items():
        if len(rows) == 1:
            if not rows[0]["superseded_by"]:
                out.add(rows[0]["event_id"])
            continue
        corrections = {r["superseded_by"] for r in rows if r["superseded_by"]}
        live = [r for r in rows if r["event_id"] in corrections] if corrections else rows
        live = [r for r in live if not r["superseded_by"]]
        if live:
            bounds = (
                (r["event_id"], Bound.of(float(r["value"]), r["comparator"] or None)) for r in live
            )
            out.add(worst(analyte, sorted(bounds, key=lambda b: b[0])))
    return out


def lab_series(
    participants: Mapping[str, Row], labs: Iterable[Row]
) -> dict[str, dict[str, list[Sample]]]:
    """participant -> measure -> samples in time order, corrected values and other copies of a
    specimen left out (`standing`), censored ones kept (marked). `egfr` is the eGFR time line
    the rules read: CKD-EPI 2021 from each creatinine (a censored creatinine gives a censored
    eGFR, the bound turned round), and a reported eGFR
    where no creatinine was taken in the day before it (clinical.egfr); `egfr_reported` keeps the
    site's own numbers."""
    out: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    creatinine: dict[str, list[datetime]] = defaultdict(list)
    labs = list(labs)
    stands = standing(labs)
    for lab in labs:
        if lab["event_id"] not in stands:  # corrected, or another copy of the same specimen
            continue
        pid, at = lab["participant_id"], utc(lab["occurred_at"])
        assert at is not None
        comparator = lab["comparator"] or None
        sample = Sample(at, float(lab["value"]), lab["visit"], comparator, _day(lab["sample_date"]))
        analyte = lab["analyte"]
        out[pid]["egfr_reported" if analyte == "egfr" else analyte].append(sample)
        if analyte != "creatinine":
            continue
        creatinine[pid].append(at)
        p = participants.get(pid)
        age = _age(p, lab, at) if p and p["sex"] else None
        if p is None or age is None:
            continue
        bound = egfr_bound(Bound.of(sample.value, comparator), age, Sex(p["sex"]))
        egfr = bound.lo if comparator in (None, "<", "<=") else bound.hi
        flipped = _FLIP.get(comparator) if comparator else None
        out[pid]["egfr"].append(Sample(at, egfr, lab["visit"], flipped, sample.sample_date))
    for pid, measures in out.items():
        for points in measures.values():
            points.sort(key=lambda x: x.at)
        for r in measures.get("egfr_reported", []):
            latest = max((t for t in creatinine[pid] if t <= r.at), default=None)
            if reported_egfr_stands(r.at, latest):
                measures["egfr"].append(r)
        measures["egfr"].sort(key=lambda x: x.at)
    return out


def first_dose(p: Row) -> FirstDose | None:
    at = utc(p["dose_at"])
    if at is None:
        return None
    return FirstDose(at, _day(p.get("dose_on")) or at.date())  # an older row: its UTC date


# -- change from baseline by visit ------------------------------------------------------------
class Excluded(StrEnum):
    """Why a result is not in a visit's summary, as the report prints it."""

    CENSORED = "censored"
    NO_BASELINE = "no baseline"
    BASELINE_CENSORED = "baseline censored"
    OUTSIDE = "outside every window"
    NEARER = "another result nearer the target day"
    NO_DOSE = "no dose recorded"


@dataclass
class Cell:
    """One visit of one measure: the participants' changes used, the results left out."""

    visit: str
    changes: dict[str, float] = field(default_factory=dict)  # participant -> change
    values: dict[str, Sample] = field(default_factory=dict)  # participant -> result summarised
    excluded: Counter[Excluded] = field(default_factory=Counter)

    @property
    def summary(self) -> Summary:
        return summarise(list(self.changes.values()))

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())


@dataclass
class MeasureOutcome:
    measure: str
    cells: dict[str, Cell]
    baselines: dict[str, Sample | None]  # every participant with a result of the measure
    unplaced: Counter[Excluded]  # results with no visit: outside every window, unlabelled


def baseline_of(points: list[Sample], dose: FirstDose | None) -> Sample | None:
    return choose_baseline(points, dose.at if dose else None)


def _participants(
    series: Mapping[str, Mapping[str, list[Sample]]],
    doses: Mapping[str, FirstDose | None],
    measure: str,
) -> Iterator[tuple[str, list[Sample], FirstDose | None, Sample | None]]:
    """Each participant with results of `measure`, in id order: (id, results, first dose,
    baseline)."""
    for pid in sorted(series):
        points = series[pid].get(measure, [])
        if points:
            dose = doses.get(pid)
            yield pid, points, dose, baseline_of(points, dose)


def change_from_baseline(
    series: Mapping[str, Mapping[str, list[Sample]]],
    doses: Mapping[str, FirstDose | None],
    measure: str,
    windows: Mapping[str, tuple[int, int]] = PROTOCOL_WINDOWS,
) -> MeasureOutcome:
    """Each participant's result per visit window minus their baseline, and what was left out."""
    cells = {v: Cell(v) for v in windows}
    unplaced: Counter[Excluded] = Counter()
    baselines: dict[str, Sample | None] = {}
    for pid, points, dose, base in _participants(series, doses, measure):
        baselines[pid] = base
        candidates: dict[str, list[tuple[tuple[int, bool, float], Sample]]] = defaultdict(list)
        for p in points:
            if p is base or (dose is not None and p.at <= dose.at) or p.visit == "baseline":
                continue  # the baseline period
            hinted = p.visit if p.visit in cells else None
            if dose is None:
                (cells[hinted].excluded if hinted else unplaced)[Excluded.NO_DOSE] += 1
                continue
            day = p.day(dose)
            visit = visit_for_day(day, windows, hint=p.visit)
            if visit is None:
                (cells[hinted].excluded if hinted else unplaced)[Excluded.OUTSIDE] += 1
                continue
            target = windows[visit][0]
            # nearest the target day; then the one labelled with the visit; then the later
            candidates[visit].append(((abs(day - target), p.visit != visit, -p.at.timestamp()), p))
        for visit, found in candidates.items():
            cell = cells[visit]
            found.sort(key=lambda c: c[0])
            chosen = found[0][1]
            if len(found) > 1:
                cell.excluded[Excluded.NEARER] += len(found) - 1
            cell.values[pid] = chosen
            if chosen.censored:
                cell.excluded[Excluded.CENSORED] += 1
            elif base is None:
                cell.excluded[Excluded.NO_BASELINE] += 1
            elif base.censored:
                cell.excluded[Excluded.BASELINE_CENSORED] += 1
            else:
                cell.changes[pid] = chosen.value - base.value
    return MeasureOutcome(measure, cells, baselines, unplaced)


# -- KDIGO shift tables ------------------------------------------------------------------------
@dataclass
class Shift:
    """Participants by category at baseline (rows) and at their last result after the dose."""

    categories: tuple[str, ...]
    counts: Counter[tuple[str, str]]
    not_classified: Counter[str]  # reason -> participants

    @property
    def n(self) -> int:
        return sum(self.counts.values())


def proven_category(sample: Sample, cat: Callable[[float], str]) -> str | None:
    """The KDIGO category a result proves: its own for an exact value; for a censored one, the
    category when every value the bound allows falls in it (an eGFR `<15` is G5, a UACR `>300`
    is A3), else None (an eGFR `<60` could be G3a or G5). Values are never negative."""
    if not sample.censored:
        return cat(sample.value)
    bound = Bound.of(sample.value, sample.comparator)
    step = max(abs(sample.value), 1.0) * 1e-6  # inside an open end
    lo = bound.lo + step if bound.lo_open else bound.lo
    hi = bound.hi - step if bound.hi_open else bound.hi
    ends = {cat(lo), cat(min(hi, 1e9))}
    return ends.pop() if len(ends) == 1 else None


def shift_table(
    series: Mapping[str, Mapping[str, list[Sample]]],
    doses: Mapping[str, FirstDose | None],
    measure: str,
) -> Shift:
    cat: Callable[[float], str]
    cat, names = (g_category, G_CATEGORIES) if measure == "egfr" else (a_category, A_CATEGORIES)
    counts: Counter[tuple[str, str]] = Counter()
    missing: Counter[str] = Counter()
    for _, points, dose, base in _participants(series, doses, measure):
        after = [p for p in points if dose is not None and p.at > dose.at and p is not base]
        if base is None:
            missing["no baseline"] += 1
            continue
        if not after:
            missing["no result after the dose"] += 1
            continue
        start, end = proven_category(base, cat), proven_category(after[-1], cat)
        if start is None:
            missing["baseline censored across categories"] += 1
        elif end is None:
            missing["last result censored across categories"] += 1
        else:
            counts[(start, end)] += 1
    return Shift(tuple(names), counts, missing)


# -- adverse events ----------------------------------------------------------------------------
NOT_RECORDED = "not recorded"


@dataclass
class AeSummary:
    enrolled: int
    participants: list[tuple[str, int]]  # (row label, participants with at least one)
    by_grade: Counter[tuple[int, bool, str]]  # (grade, serious, relatedness class) -> events
    by_locality: Counter[tuple[str, str]]  # (source, local/systemic/not recorded) -> events
    not_enrolled: int  # AEs of participants the trail has no enrolment for

    def pct(self, n: int) -> float | None:
        return 100 * n / self.enrolled if self.enrolled else None


def relatedness_class(relatedness: str) -> str:
    """related (possible or stronger, clinical.terms), not related, or not yet assessed."""
    if relatedness == "not_assessed":
        return "not assessed"
    return "related" if relatedness in {"possible", "probable", "definite"} else "not related"


def ae_summary(participants: Mapping[str, Row], aes: Sequence[Row]) -> AeSummary:
    enrolled = {pid for pid, p in participants.items() if p["enrolled_at"] is not None}
    counted = [a for a in aes if a["participant_id"] in enrolled]

    def who(pred: Callable[[Row], bool]) -> int:
        return len({a["participant_id"] for a in counted if pred(a)})

    rows = [
        ("Any AE", who(lambda a: True)),
        ("Any SAE", who(lambda a: a["serious"])),
        ("Any AE of CTCAE grade 3 or more", who(lambda a: a["grade"] >= 3)),
        ("Any related AE (possible or stronger)", who(lambda a: a["related"])),
        ("Any related SAE", who(lambda a: a["related"] and a["serious"])),
        ("Any AE with relatedness not yet assessed",
         who(lambda a: a["relatedness"] == "not_assessed")),
        ("Any local AE", who(lambda a: a["locality"] == "local")),
        ("Any systemic AE", who(lambda a: a["locality"] == "systemic")),
        ("Any AE with locality not recorded", who(lambda a: a["locality"] is None)),
        ("Death", who(fatal)),
    ]  # fmt: skip
    by_grade = Counter(
        (a["grade"], bool(a["serious"]), relatedness_class(a["relatedness"])) for a in counted
    )
    by_locality = Counter(
        (a["source"] or "unknown", a["locality"] or NOT_RECORDED) for a in counted
    )
    return AeSummary(len(enrolled), rows, by_grade, by_locality, len(aes) - len(counted))


# -- regulatory clocks and alert response ------------------------------------------------------
CLOCK_RULES = ("sae.reported", "susar.clock")


@dataclass(frozen=True)
class Clock:
    """One regulatory clock: an SAE's 24 h, a SUSAR's 7 or 15 days, from the site's awareness.
    Stopped by the safety officer's acknowledgement of the alert (the trail has no event for the
    regulator's receipt)."""

    rule_id: str
    participant_id: str | None
    ae_id: str | None
    term: str | None
    aware_at: datetime | None
    due_by: datetime | None
    stopped_at: datetime | None
    state: str  # met, missed, open, withdrawn
    entered_late: bool  # the report reached the trail after the deadline had passed

    @property
    def label(self) -> str:
        return "SAE, 24 h" if self.rule_id == "sae.reported" else "SUSAR"


def _clock_state(status: str, due: datetime | None, ack: datetime | None, cutoff: datetime) -> str:
    if status == "withdrawn":
        return "withdrawn"
    if due is None:
        return "open" if ack is None else "met"
    if ack is not None:
        return "met" if ack <= due else "missed"
    return "missed" if cutoff > due else "open"


def clocks(alerts: Sequence[Row], aes: Sequence[Row], cutoff: datetime) -> list[Clock]:
    """Every SAE and SUSAR clock the rules started, in order of awareness."""
    terms = {(a["participant_id"], a["ae_id"]): a["term"] for a in aes}
    out = []
    for a in alerts:
        if a["rule_id"] not in CLOCK_RULES:
            continue
        facts = json.loads(a["facts"]) if a["facts"] else {}
        due, ack = utc(a["due_by"]), utc(a["acknowledged_at"])
        ae_id = facts.get("ae_id")
        out.append(
            Clock(
                a["rule_id"],
                a["participant_id"],
                ae_id,
                terms.get((a["participant_id"], ae_id)),
                utc(facts.get("aware_at")),
                due,
                ack,
                _clock_state(a["status"], due, ack, cutoff),
                bool(facts.get("deadline_passed_on_entry")),
            )
        )
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(out, key=lambda c: (c.aware_at or far, c.rule_id, c.participant_id or ""))


@dataclass(frozen=True)
class RuleResponse:
    rule_id: str
    alerts: int
    by_severity: dict[str, int]
    acknowledged: int
    withdrawn: int
    hours_to_ack: Summary  # from raised (the trail received its trigger) to acknowledged


def alert_response(alerts: Sequence[Row]) -> list[RuleResponse]:
    by_rule: dict[str, list[Row]] = defaultdict(list)
    for a in alerts:
        by_rule[a["rule_id"] or "(lifecycle only)"].append(a)
    out = []
    for rule, items in sorted(by_rule.items()):
        hours = []
        for a in items:
            raised, ack = utc(a["recorded_at"]), utc(a["acknowledged_at"])
            if raised is not None and ack is not None:
                hours.append((ack - raised).total_seconds() / 3600)
        severities = Counter(a["severity"] or "unknown" for a in items)
        out.append(
            RuleResponse(
                rule,
                len(items),
                dict(sorted(severities.items())),
                sum(1 for a in items if a["acknowledged_at"]),
                sum(1 for a in items if a["status"] == "withdrawn"),
                summarise(hours),
            )
        )
    return out


# -- the whole report's numbers ----------------------------------------------------------------
@dataclass
class Outcomes:
    trial_id: str | None
    cutoff: datetime
    enrolled: int
    dosed: int
    sites: dict[str, int]  # site -> participants enrolled
    series: dict[str, dict[str, list[Sample]]]
    doses: dict[str, FirstDose | None]
    measures: list[MeasureOutcome]
    shifts: dict[str, Shift]
    aes: AeSummary
    saes: Sequence[Row]
    clocks: list[Clock]
    response: list[RuleResponse]
    flow: Flow
    soc: SocTable


def trials(participants: Sequence[Row]) -> list[str]:
    """The trials the read models hold participants of."""
    return sorted({p["trial_id"] for p in participants if p["trial_id"]})


def outcomes(
    participants: Sequence[Row],
    labs: Sequence[Row],
    aes: Sequence[Row],
    alerts: Sequence[Row],
    cutoff: datetime,
    trial_id: str | None = None,
    dispositions: Sequence[Row] = (),
) -> Outcomes:
    """Every number of one trial's report from the read models as of the data cut-off. Rows of
    another trial's participants are left out; an AE or a lab of a participant the trail has no
    enrolment or dose for stays in (counted apart: a data problem the board should see)."""
    if trial_id is not None:
        others = {p["participant_id"] for p in participants if p["trial_id"] != trial_id}
        participants = [p for p in participants if p["trial_id"] == trial_id]
        labs = [r for r in labs if r["participant_id"] not in others]
        aes = [a for a in aes if a["participant_id"] not in others]
        alerts = [
            a for a in alerts
            if a["trial_id"] == trial_id
            or (a["trial_id"] is None and a["participant_id"] not in others)  # before 0005
        ]  # fmt: skip
        dispositions = [d for d in dispositions if d["trial_id"] == trial_id]
    people = {p["participant_id"]: p for p in participants}
    enrolled = [p for p in participants if p["enrolled_at"] is not None]
    doses = {pid: first_dose(p) for pid, p in people.items()}
    series = lab_series(people, labs)
    return Outcomes(
        trial_id=trial_id,
        cutoff=cutoff,
        enrolled=len(enrolled),
        dosed=sum(1 for d in doses.values() if d is not None),
        sites=dict(sorted(Counter(p["site_id"] or "unknown" for p in enrolled).items())),
        series=series,
        doses=doses,
        measures=[change_from_baseline(series, doses, m) for m in MEASURES],
        shifts={m: shift_table(series, doses, m) for m in ("egfr", "uacr")},
        aes=ae_summary(people, aes),
        saes=sorted(
            (a for a in aes if a["serious"]), key=lambda a: (a["participant_id"], a["onset_date"])
        ),
        clocks=clocks(alerts, aes, cutoff),
        response=alert_response(alerts),
        flow=flow(participants, dispositions, aes),
        soc=soc_pt(participants, aes),
    )
