"""Participant and trial state, each a fold over events: `apply(state, event) -> state`.

The states are plain pydantic models so the stream worker can keep them in faust tables as JSON;
the engine never mutates a state it was given (it folds into a deep copy).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import singledispatch
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from contracts import (
    AeReported,
    AeUpdated,
    Analyte,
    ClinicalEvent,
    DoseAdministered,
    LabResulted,
    ParticipantEnrolled,
    SeriousnessCriterion,
    Sex,
    Visit,
    VisitCompleted,
)
from services.safety_rules.domain.egfr import ckd_epi_2021, whole_years


class LabPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    analyte: Analyte
    value: float
    censored: bool  # a value with a comparator ("<0.2"): kept, never read by a numeric rule
    occurred_at: datetime
    visit: Visit | None


class AeRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    ae_id: str
    term: str
    grade: int
    serious: bool
    criteria: list[SeriousnessCriterion]
    related: bool
    unexpected: bool
    fatal: bool


_T = TypeVar("_T")


class ParticipantState(BaseModel):
    participant_id: str | None = None
    trial_id: str | None = None
    sex: Sex | None = None
    birth_date: date | None = None
    age_at_enrolment: int | None = None
    enrolled_at: datetime | None = None
    dose_at: datetime | None = None
    dose_event_id: str | None = None
    labs: list[LabPoint] = Field(default_factory=list)
    aes: dict[str, AeRecord] = Field(default_factory=dict)
    visits_done: list[Visit] = Field(default_factory=list)
    seen: set[str] = Field(default_factory=set)
    raised: set[str] = Field(default_factory=set)
    # Derived series, computed once per state: several rules read them for the same event.
    _memo: dict[Any, Any] = PrivateAttr(default_factory=dict)

    def _cached(self, key: Any, compute: Callable[[], _T]) -> _T:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]

    def evolve(self) -> ParticipantState:
        """A copy to fold the next event into: containers copied, the frozen records inside
        them shared (a deep copy per event would make a long history quadratic)."""
        new = self.model_copy()
        new.labs = list(self.labs)
        new.aes = dict(self.aes)
        new.visits_done = list(self.visits_done)
        new.seen = set(self.seen)
        new.raised = set(self.raised)
        new._memo = {}
        return new

    # -- derived -------------------------------------------------------------------------------
    def age_on(self, day: date) -> int | None:
        """Whole years at `day`: from the birth date, else from the age at enrolment."""
        if self.birth_date is not None:
            return whole_years(self.birth_date, day)
        if self.age_at_enrolment is None or self.enrolled_at is None:
            return None
        return self.age_at_enrolment + max(0, whole_years(self.enrolled_at.date(), day))

    def numeric(self, analyte: Analyte) -> list[LabPoint]:
        """Numeric results of an analyte, in clinical time order."""

        def compute() -> list[LabPoint]:
            points = [p for p in self.labs if p.analyte is analyte and not p.censored]
            return sorted(points, key=lambda p: (p.occurred_at, p.event_id))

        return self._cached(("numeric", analyte), compute)

    def baseline(self, analyte: Analyte) -> LabPoint | None:
        """The baseline-visit result, else the last result before the dose."""
        points = self.numeric(analyte)
        at_baseline = [p for p in points if p.visit is Visit.BASELINE]
        if at_baseline:
            return at_baseline[-1]
        if self.dose_at is None:
            return None
        before = [p for p in points if p.occurred_at < self.dose_at]
        return before[-1] if before else None

    def computed_egfr(self, creatinine: LabPoint) -> float | None:
        age = self.age_on(creatinine.occurred_at.date())
        if self.sex is None or age is None:
            return None
        return ckd_epi_2021(creatinine.value, age, self.sex)

    def egfr_series(self) -> list[tuple[LabPoint, float]]:
        """eGFR over time: CKD-EPI 2021 from creatinine where it exists, else the reported value
        (a reported eGFR is used only when no creatinine was taken within a day of it)."""
        return self._cached("egfr_series", self._egfr_series)

    def _egfr_series(self) -> list[tuple[LabPoint, float]]:
        series: list[tuple[LabPoint, float]] = []
        for c in self.numeric(Analyte.CREATININE):
            computed = self.computed_egfr(c)
            if computed is not None:
                series.append((c, computed))
        times = [c.occurred_at for c, _ in series]  # sorted: numeric() is in time order
        for e in self.numeric(Analyte.EGFR):
            i = bisect_left(times, e.occurred_at - timedelta(days=1))
            if i == len(times) or times[i] > e.occurred_at + timedelta(days=1):
                series.append((e, e.value))
        return sorted(series, key=lambda s: (s[0].occurred_at, s[0].event_id))

    def egfr_of(self, event_id: str) -> tuple[LabPoint, float] | None:
        """The eGFR series entry of a lab event, if it gave one."""
        index = self._cached("egfr_index", lambda: {s[0].event_id: s for s in self.egfr_series()})
        return index.get(event_id)

    def baseline_egfr(self) -> tuple[LabPoint, float] | None:
        series = self.egfr_series()
        at_baseline = [s for s in series if s[0].visit is Visit.BASELINE]
        if at_baseline:
            return at_baseline[-1]
        if self.dose_at is None:
            return None
        before = [s for s in series if s[0].occurred_at < self.dose_at]
        return before[-1] if before else None


# -- the fold ----------------------------------------------------------------------------------
@singledispatch
def _apply(event: ClinicalEvent, state: ParticipantState) -> None:
    """Events with no effect on rule state (none today) fall through here."""


@_apply.register
def _(event: ParticipantEnrolled, state: ParticipantState) -> None:
    state.sex = event.sex
    state.birth_date = event.birth_date
    state.age_at_enrolment = event.age_years
    state.enrolled_at = event.enrolled_at


@_apply.register
def _(event: DoseAdministered, state: ParticipantState) -> None:
    state.dose_at = event.occurred_at
    state.dose_event_id = str(event.event_id)


@_apply.register
def _(event: VisitCompleted, state: ParticipantState) -> None:
    if event.visit not in state.visits_done:
        state.visits_done.append(event.visit)


@_apply.register
def _(event: LabResulted, state: ParticipantState) -> None:
    state.labs.append(
        LabPoint(
            event_id=str(event.event_id),
            analyte=event.analyte,
            value=event.value,
            censored=not event.is_numeric,
            occurred_at=event.occurred_at,
            visit=event.visit,
        )
    )


def _apply_ae(event: AeReported | AeUpdated, state: ParticipantState) -> None:
    state.aes[event.ae_id] = AeRecord(
        event_id=str(event.event_id),
        ae_id=event.ae_id,
        term=event.term,
        grade=event.ctcae_grade,
        serious=event.serious,
        criteria=list(event.seriousness_criteria),
        related=event.is_related,
        unexpected=event.expectedness is not None and event.expectedness.value == "unexpected",
        fatal=event.outcome.value == "fatal"
        or SeriousnessCriterion.DEATH in event.seriousness_criteria,
    )


_apply.register(AeReported, _apply_ae)
_apply.register(AeUpdated, _apply_ae)


def apply(state: ParticipantState, event: ClinicalEvent) -> ParticipantState:
    """The state after `event`, as a new object. A correction (`supersedes`) first removes what
    it corrects, so the corrected value is the one every rule reads."""
    new = state.evolve()
    new.participant_id = event.participant_id
    new.trial_id = event.trial_id
    new.seen.add(str(event.event_id))
    if event.supersedes is not None:
        gone = str(event.supersedes)
        new.labs = [p for p in new.labs if p.event_id != gone]
        if new.dose_event_id == gone:
            new.dose_at = new.dose_event_id = None
    _apply(event, new)
    return new
