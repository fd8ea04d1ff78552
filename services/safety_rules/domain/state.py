"""A participant's state: a fold over their events, kept in clinical order whatever the arrival.

`fold(state, event, reach)` places the event at its `occurred_at` and returns what it made
dirty: the results whose rules must be checked again because their answer may have changed (the
result itself; the later ones whose baseline, 48-hour or reference window, previous value or
fitted slope it enters). A correction first takes out what it corrects, so every rule reads the
corrected value, baseline included. The state is folded in place: the engine owns it, and the
stream worker and `evaluate` each keep one per participant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from clinical.age import age_on, clinical_date
from clinical.bounds import Bound
from clinical.course import death_date, schedule_end
from clinical.egfr import SAME_SAMPLE, egfr_bound, reported_egfr_stands
from clinical.specimen import minute, same_value, worst
from clinical.terms import is_fatal
from contracts import (
    AeReported,
    AeUpdated,
    ClinicalEvent,
    DoseAdministered,
    LabResulted,
    ParticipantDisposition,
    ParticipantEnrolled,
    Sex,
    VisitCompleted,
)
from services.safety_rules.domain.series import Point, Series

# Measures with rules. `egfr` is the eGFR time line (CKD-EPI from each creatinine, and each
# reported eGFR with no creatinine in the day before it); `reported_egfr` holds every reported
# eGFR as sent, which the mismatch rule compares with the creatinine of the same sample.
MEASURES = ("creatinine", "egfr", "reported_egfr", "uacr", "tnf_alpha", "il_10")
SPECIMEN = timedelta(minutes=1) - timedelta(microseconds=1)  # one collection minute
FITTED = frozenset({"egfr"})  # the measures whose least-squares fit a rule reads (the slope)


@dataclass(frozen=True, slots=True)
class Dose:
    event_id: str
    at: datetime
    cells_per_kg: float


@dataclass(slots=True)
class Dirty:
    """What an event made worth checking again. `reach`: how far after a result, by measure,
    a rule's window reaches back to it (RulesConfig.reach)."""

    reach: Mapping[str, timedelta]
    points: dict[str, dict[str, Point]] = field(default_factory=dict)
    ae: AeReported | AeUpdated | None = None
    doses: bool = False
    # copies of one specimen that disagree: (analyte, the copy standing before, the new copy)
    discrepancies: list[tuple[str, Point, Point]] = field(default_factory=list)

    def add(self, measure: str, *points: Point) -> None:
        bucket = self.points.setdefault(measure, {})
        for p in points:
            bucket[p.event_id] = p

    def drop(self, measure: str, event_id: str) -> None:
        self.points.get(measure, {}).pop(event_id, None)


class ParticipantState:
    """Everything the rules read about one participant, and what they already raised."""

    def __init__(self) -> None:
        self.participant_id: str | None = None
        self.trial_id: str | None = None
        self.enrolment_id: str | None = None
        self.sex: Sex | None = None
        self.birth_date: date | None = None
        self.age_at_enrolment: int | None = None
        self.enrolled_on: date | None = None
        self.doses: list[Dose] = []
        self.series: dict[str, Series] = {m: Series(fitted=m in FITTED) for m in MEASURES}
        self.visits_done: dict[str, str] = {}  # event_id -> visit
        self.seen: set[str] = set()
        self.superseded: set[str] = set()
        self.raised: dict[str, str] = {}  # alert_id -> rule_id
        self.cited: dict[str, list[str]] = {}  # event_id -> alert_ids whose evidence cites it
        self.sites: dict[str, list[str]] = {}  # alert_id -> [measure, event_id] it judged
        self.withdrawn: set[str] = set()
        self.last_tick: datetime | None = None
        # what ended the schedule: a disposition's event_id -> the day (ISO); a correction
        # takes its entry out again
        self.ends: dict[str, str] = {}
        # each AE's newest version (occurred_at, recorded_at) -> its day of death or None: the
        # newest version decides, whatever order the versions arrive in
        self.deaths: dict[str, tuple[str, str | None]] = {}
        # one specimen, several copies (clinical.specimen): "<measure>|<minute>" -> every copy's
        # point, kept only while there are two or more; the series holds the standing one
        self.specimens: dict[str, list[list[Any]]] = {}

    # -- derived -------------------------------------------------------------------------------
    @property
    def first_dose(self) -> Dose | None:
        return self.doses[0] if self.doses else None

    @property
    def first_dose_at(self) -> datetime | None:
        return self.doses[0].at if self.doses else None

    def age_at(self, at: datetime) -> int | None:
        return age_on(
            clinical_date(at),
            birth_date=self.birth_date,
            age_at_enrolment=self.age_at_enrolment,
            enrolled_on=self.enrolled_on,
        )

    def egfr_point(self, creatinine: Point) -> Point | None:
        """The eGFR a creatinine result gives (CKD-EPI 2021), once sex and age are known."""
        age = self.age_at(creatinine.at)
        if self.sex is None or age is None:
            return None
        bound = egfr_bound(creatinine.bound, age, self.sex)
        return Point(creatinine.event_id, creatinine.at, bound, creatinine.visit, creatinine.bound)

    @property
    def schedule_end(self) -> date | None:
        died = (d for _, d in self.deaths.values() if d is not None)
        return schedule_end(date.fromisoformat(d) for d in (*self.ends.values(), *died))

    def visits(self) -> set[str]:
        return set(self.visits_done.values())

    def could_be_baseline(self, p: Point) -> bool:
        first = self.first_dose_at
        return p.visit == "baseline" or first is None or p.at < first

    # -- bookkeeping of alerts -----------------------------------------------------------------
    def record(
        self, alert_id: str, rule_id: str, evidence: list[str], site: tuple[str, str] | None
    ) -> None:
        self.raised[alert_id] = rule_id
        for e in evidence:
            self.cited.setdefault(e, []).append(alert_id)
        if site is not None:
            self.sites[alert_id] = list(site)

    # -- serialisation (the worker keeps the state in a table) ---------------------------------
    def to_json(self) -> bytes:
        return json.dumps(
            {
                "participant_id": self.participant_id,
                "trial_id": self.trial_id,
                "enrolment_id": self.enrolment_id,
                "sex": self.sex.value if self.sex else None,
                "birth_date": self.birth_date.isoformat() if self.birth_date else None,
                "age_at_enrolment": self.age_at_enrolment,
                "enrolled_on": self.enrolled_on.isoformat() if self.enrolled_on else None,
                "doses": [[d.event_id, d.at.isoformat(), d.cells_per_kg] for d in self.doses],
                "series": {m: [p.to_json() for p in s.points] for m, s in self.series.items()},
                "visits_done": self.visits_done,
                "seen": sorted(self.seen),
                "superseded": sorted(self.superseded),
                "raised": self.raised,
                "cited": self.cited,
                "sites": self.sites,
                "withdrawn": sorted(self.withdrawn),
                "last_tick": self.last_tick.isoformat() if self.last_tick else None,
                "ends": self.ends,
                "deaths": self.deaths,
                "specimens": self.specimens,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ParticipantState:
        d = json.loads(raw)
        s = cls()
        s.participant_id, s.trial_id = d["participant_id"], d["trial_id"]
        s.enrolment_id = d["enrolment_id"]
        s.sex = Sex(d["sex"]) if d["sex"] else None
        s.birth_date = date.fromisoformat(d["birth_date"]) if d["birth_date"] else None
        s.age_at_enrolment = d["age_at_enrolment"]
        s.enrolled_on = date.fromisoformat(d["enrolled_on"]) if d["enrolled_on"] else None
        s.doses = [Dose(e, datetime.fromisoformat(at), c) for e, at, c in d["doses"]]
        s.series = {
            m: Series([Point.from_json(r) for r in d["series"][m]], fitted=m in FITTED)
            for m in MEASURES
        }
        s.visits_done = d["visits_done"]
        s.seen, s.superseded = set(d["seen"]), set(d["superseded"])
        s.raised, s.cited, s.withdrawn = d["raised"], d["cited"], set(d["withdrawn"])
        s.sites = d["sites"]
        s.last_tick = datetime.fromisoformat(d["last_tick"]) if d["last_tick"] else None
        s.ends = d.get("ends", {})  # states stored before dispositions had none
        s.deaths = {k: (v[0], v[1]) for k, v in d.get("deaths", {}).items()}
        s.specimens = d.get("specimens", {})
        return s


# -- placing results on their time lines -------------------------------------------------------
def _placed(state: ParticipantState, measure: str, p: Point, dirty: Dirty) -> None:
    """Mark what a result entering or leaving `measure` at p.at may change."""
    series = state.series[measure]
    if measure == "egfr" or state.could_be_baseline(p):
        # a baseline for everything after it; on the eGFR line, every later fitted slope
        later = series.after(p.key)
        if later:  # in clinical order, none
            dirty.add(measure, *later)
    elif measure in dirty.reach:  # the later results whose window reaches back to it
        dirty.add(measure, *series.between(p.at, p.at + dirty.reach[measure]))
    elif measure == "uacr":
        nxt = series.next_after(p.key)
        if nxt is not None:
            dirty.add(measure, nxt)  # the move into A3 reads the previous value


def _insert(state: ParticipantState, measure: str, p: Point, dirty: Dirty) -> None:
    state.series[measure].insert(p)
    dirty.add(measure, p)
    _placed(state, measure, p, dirty)


def _remove(state: ParticipantState, measure: str, event_id: str, dirty: Dirty) -> None:
    p = state.series[measure].remove(event_id)
    if p is not None:
        dirty.drop(measure, event_id)
        _placed(state, measure, p, dirty)


def _sync_reported_egfr(state: ParticipantState, around: datetime, dirty: Dirty) -> None:
    """A reported eGFR stands on the eGFR line unless a creatinine was taken in the day before
    it (the same sample, computed instead); re-decide those a change at `around` can touch, and
    mark the mismatch checks of the same samples."""
    reported, creat = state.series["reported_egfr"], state.series["creatinine"]
    if not reported.points:
        return
    egfr = state.series["egfr"]
    for r in reported.between(around - SAME_SAMPLE, around + SAME_SAMPLE):
        dirty.add("reported_egfr", r)
        latest = creat.latest_at_or_before(r.at)
        shadowed = not reported_egfr_stands(r.at, latest.at if latest else None)
        if shadowed and r.event_id in egfr.by_id:
            _remove(state, "egfr", r.event_id, dirty)
        elif not shadowed and r.event_id not in egfr.by_id:
            _insert(state, "egfr", r, dirty)


def _rebuild_egfr(state: ParticipantState, dirty: Dirty) -> None:
    """Sex or age changed: every computed eGFR is computed again."""
    creat = state.series["creatinine"]
    for p in list(state.series["egfr"].points):
        if p.event_id in creat.by_id:
            state.series["egfr"].remove(p.event_id)
    for c in creat.points:
        e = state.egfr_point(c)
        if e is not None:
            state.series["egfr"].insert(e)
    dirty.add("egfr", *state.series["egfr"].points)
    dirty.add("reported_egfr", *state.series["reported_egfr"].points)


def _remove_fact(state: ParticipantState, event_id: str, dirty: Dirty) -> None:
    """Take out what a correction replaces, wherever it sits."""
    if state.specimens and _drop_copy(state, event_id, dirty):
        return
    for analyte in ("creatinine", "reported_egfr", "uacr", "tnf_alpha", "il_10"):
        p = state.series[analyte].by_id.get(event_id)
        if p is None:
            continue
        _remove(state, analyte, event_id, dirty)
        if analyte in ("creatinine", "reported_egfr"):
            _remove(state, "egfr", event_id, dirty)
            _sync_reported_egfr(state, p.at, dirty)
        return
    before = state.first_dose_at
    if any(d.event_id == event_id for d in state.doses):
        state.doses = [d for d in state.doses if d.event_id != event_id]
        _dose_moved(state, before, dirty)
        return
    state.visits_done.pop(event_id, None)
    state.ends.pop(event_id, None)  # a disposition entered by mistake: the schedule re-opens


def _dose_moved(state: ParticipantState, before: datetime | None, dirty: Dirty) -> None:
    """The first dose decides every 'last result before the dose' baseline: when it moves,
    everything after the earlier of the two times is judged again."""
    dirty.doses = True
    after = state.first_dose_at
    if before == after:
        return
    since = min(t for t in (before, after) if t is not None)
    for measure, series in state.series.items():
        dirty.add(measure, *[p for p in series.points if p.at > since])


# -- the fold ----------------------------------------------------------------------------------
def _fold_enrolment(event: ParticipantEnrolled, state: ParticipantState, dirty: Dirty) -> None:
    state.enrolment_id = str(event.event_id)
    state.sex = event.sex
    state.birth_date = event.birth_date
    state.age_at_enrolment = event.age_years
    state.enrolled_on = clinical_date(event.enrolled_at)
    _rebuild_egfr(state, dirty)


def _fold_dose(event: DoseAdministered, state: ParticipantState, dirty: Dirty) -> None:
    before = state.first_dose_at
    dose = Dose(str(event.event_id), event.occurred_at, event.cells_per_kg)
    state.doses = sorted([*state.doses, dose], key=lambda d: (d.at, d.event_id))
    _dose_moved(state, before, dirty)


def _fold_visit(event: VisitCompleted, state: ParticipantState, dirty: Dirty) -> None:
    state.visits_done[str(event.event_id)] = event.visit.value


def _fold_lab(event: LabResulted, state: ParticipantState, dirty: Dirty, event_id: str) -> None:
    # the contract's enums are str members: used as the strings they are (`.value` is a
    # descriptor call, three per result)
    p = Point(event_id, event.occurred_at, Bound.of(event.value, event.comparator), event.visit)
    analyte: str = event.analyte
    measure = "reported_egfr" if analyte == "egfr" else analyte
    standing = same_specimen(state, measure, p)
    if standing is None:
        _place(state, analyte, p, dirty)
        return
    # another copy of a sample already here (another route, another event_id)
    copies = state.specimens.setdefault(_specimen_key(measure, p.at), [standing.to_json()])
    copies.append(p.to_json())
    if same_value(analyte, standing.bound, p.bound):
        return  # an equal copy: counted once, raises nothing
    dirty.discrepancies.append((analyte, standing, p))
    chosen = worst(analyte, ((c, c.bound) for c in map(Point.from_json, copies)))
    if chosen.event_id != standing.event_id:  # the worse value stands until a correction
        _unplace(state, analyte, standing, dirty)
        _place(state, analyte, chosen, dirty)


def _specimen_key(measure: str, at: datetime) -> str:
    return f"{measure}|{minute(at).isoformat()}"


def same_specimen(state: ParticipantState, measure: str, p: Point) -> Point | None:
    """The result standing for `p`'s specimen (same analyte, same minute), if one is here."""
    start = minute(p.at)
    for q in state.series[measure].between(start, start + SPECIMEN):
        if minute(q.at) == start:
            return q
    return None


def _place(state: ParticipantState, analyte: str, p: Point, dirty: Dirty) -> None:
    if analyte == "egfr":
        _insert(state, "reported_egfr", p, dirty)
        _sync_reported_egfr(state, p.at, dirty)
        return
    _insert(state, analyte, p, dirty)
    if analyte == "creatinine":
        e = state.egfr_point(p)
        if e is not None:
            _insert(state, "egfr", e, dirty)
        _sync_reported_egfr(state, p.at, dirty)


def _unplace(state: ParticipantState, analyte: str, p: Point, dirty: Dirty) -> None:
    measure = "reported_egfr" if analyte == "egfr" else analyte
    _remove(state, measure, p.event_id, dirty)
    if measure in ("creatinine", "reported_egfr"):
        _remove(state, "egfr", p.event_id, dirty)
        _sync_reported_egfr(state, p.at, dirty)


def _drop_copy(state: ParticipantState, event_id: str, dirty: Dirty) -> bool:
    """A correction of one copy of a specimen settles the specimen: every copy is set aside
    (all stay in the trail) and the correction, folded next, stands alone. Whether `event_id`
    was such a copy."""
    for key, copies in state.specimens.items():
        if not any(c[0] == event_id for c in copies):
            continue
        measure = key.split("|", 1)[0]
        analyte = "egfr" if measure == "reported_egfr" else measure
        line = state.series[measure].by_id
        for c in copies:
            if c[0] in line:
                _unplace(state, analyte, line[c[0]], dirty)
        del state.specimens[key]
        return True
    return False


def fold(
    state: ParticipantState,
    event: ClinicalEvent,
    reach: Mapping[str, timedelta],
    event_id: str | None = None,
) -> Dirty:
    """Fold `event` into `state` (in place) and return what it made dirty. A correction first
    removes what it corrects; an event already corrected away is ignored. (`reach`: the
    configuration's RulesConfig.reach; `event_id`: the event's id as text, when the caller has
    it already.) Events with no effect on rule state (visits missed, notes) only join `seen`."""
    event_id = event_id or str(event.event_id)
    dirty = Dirty(reach=reach)
    state.participant_id = event.participant_id
    state.trial_id = event.trial_id
    state.seen.add(event_id)
    if event_id in state.superseded:
        return dirty
    if event.supersedes is not None:
        state.superseded.add(str(event.supersedes))
        _remove_fact(state, str(event.supersedes), dirty)
    # the hot path first
    if isinstance(event, LabResulted):
        _fold_lab(event, state, dirty, event_id)
    elif isinstance(event, AeReported | AeUpdated):
        dirty.ae = event  # judged on its own report: every version repeats the full AE
        _fold_death(event, state)
    elif isinstance(event, DoseAdministered):
        _fold_dose(event, state, dirty)
    elif isinstance(event, ParticipantEnrolled):
        _fold_enrolment(event, state, dirty)
    elif isinstance(event, VisitCompleted):
        _fold_visit(event, state, dirty)
    elif isinstance(event, ParticipantDisposition) and event.ends_schedule:
        state.ends[event_id] = event.disposition_date.isoformat()
    return dirty


def _fold_death(event: AeReported | AeUpdated, state: ParticipantState) -> None:
    """A fatal AE ends the schedule at the death; a newer version that is not fatal re-opens
    it. Versions are ordered by (occurred_at, recorded_at), not by arrival."""
    stamp = f"{event.occurred_at.isoformat()}|{event.recorded_at.isoformat()}"
    known = state.deaths.get(event.ae_id)
    if known is not None and known[0] > stamp:
        return  # an older version, arriving late
    fatal = is_fatal(event.outcome, event.ctcae_grade, event.seriousness_criteria)
    died = death_date(event.end_date, event.onset_date).isoformat() if fatal else None
    state.deaths[event.ae_id] = (stamp, died)
