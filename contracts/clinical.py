"""Participant-level clinical facts: everything that travels on `trial.events`."""

from __future__ import annotations

import math
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from clinical.age import clinical_date, whole_years
from contracts.common import (
    Accepting,
    ClinicalEnvelope,
    Instant,
    NonEmptyStr,
    PartialDate,
    Text,
    replaying,
)
from contracts.units import Analyte, UnitError, canonical_unit, check_range, fold_unit, normalise

PROTOCOL_CELLS_PER_KG = 1_000_000
AGE_MIN, AGE_MAX = 18, 120  # at enrolment, in whole years, however the age is given
_ANALYTES = {a.value: a for a in Analyte}  # (built once: each lab result asks)
_CANONICAL_UNITS = frozenset(canonical_unit(a) for a in Analyte)
MeddraCode = Annotated[str, Field(pattern=r"^\d{8}$")]


class Sex(StrEnum):
    FEMALE = "F"
    MALE = "M"


class Visit(StrEnum):
    BASELINE = "baseline"
    M1 = "M1"
    M3 = "M3"
    M6 = "M6"
    M9 = "M9"
    M12 = "M12"
    UNSCHEDULED = "unscheduled"


class Comparator(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class SeriousnessCriterion(StrEnum):
    DEATH = "death"
    LIFE_THREATENING = "life_threatening"
    HOSPITALIZATION = "hospitalization"
    DISABILITY = "disability"
    CONGENITAL_ANOMALY = "congenital_anomaly"
    IMPORTANT_MEDICAL_EVENT = "important_medical_event"


class Relatedness(StrEnum):
    NOT_RELATED = "not_related"
    UNLIKELY = "unlikely"
    POSSIBLE = "possible"
    PROBABLE = "probable"
    DEFINITE = "definite"
    # Causality not yet assessed by the investigator: accepted, never rejected, and counted as
    # related by the SUSAR clock and the stopping rule until assessed (clinical.terms).
    NOT_ASSESSED = "not_assessed"


class Expectedness(StrEnum):
    EXPECTED = "expected"
    UNEXPECTED = "unexpected"


class Locality(StrEnum):
    LOCAL = "local"
    SYSTEMIC = "systemic"


class AeOutcome(StrEnum):
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    RECOVERED_WITH_SEQUELAE = "recovered_with_sequelae"
    NOT_RECOVERED = "not_recovered"
    FATAL = "fatal"
    UNKNOWN = "unknown"


class Disposition(StrEnum):
    """How a participant left the trial's schedule (DESIGN, "Participants' course")."""

    COMPLETED = "completed"
    WITHDREW_CONSENT = "withdrew_consent"
    WITHDRAWN_BY_INVESTIGATOR = "withdrawn_by_investigator"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up"
    DIED = "died"
    SCREEN_FAILURE = "screen_failure"
    # only as a correction (`supersedes`) of a disposition entered by mistake: back on study
    ON_STUDY = "on_study"


class WithdrawalReason(StrEnum):
    ADVERSE_EVENT = "adverse_event"
    PROTOCOL_VIOLATION = "protocol_violation"
    LACK_OF_EFFICACY = "lack_of_efficacy"
    SPONSOR_TERMINATED = "sponsor_terminated"
    OTHER = "other"


class ParticipantDisposition(ClinicalEnvelope):
    """The participant left the schedule on `disposition_date`: no visit is due after it. Data
    arriving later that happened before it, an SAE's follow-up or a death after a withdrawal
    is still evaluated. A disposition entered by mistake is corrected (`supersedes`): the
    schedule re-opens."""

    event_type: Literal["participant.disposition"] = "participant.disposition"
    disposition: Disposition
    disposition_date: date = Field(description="The day the participant left, at the site")
    withdrawal_reason: WithdrawalReason | None = Field(
        default=None, description="Required when withdrawn by the investigator"
    )
    source_term: NonEmptyStr | None = Field(
        default=None, description="The source's own coded term (SDTM DSDECOD), as given"
    )
    verbatim: Text | None = Field(default=None, description="The source's verbatim (DSTERM)")

    @property
    def ends_schedule(self) -> bool:
        return self.disposition is not Disposition.ON_STUDY

    @model_validator(mode="after")
    def _reason_when_withdrawn(self) -> Self:
        if self.disposition is Disposition.ON_STUDY and self.supersedes is None:
            raise ValueError(
                "disposition: on_study only corrects a disposition entered by mistake; give "
                "supersedes (the disposition's event_id) and a reason"
            )
        by_investigator = self.disposition is Disposition.WITHDRAWN_BY_INVESTIGATOR
        if by_investigator and self.withdrawal_reason is None:
            raise ValueError(
                "withdrawal_reason: a withdrawal by the investigator must give its reason "
                f"({', '.join(r.value for r in WithdrawalReason)})"
            )
        if not by_investigator and self.withdrawal_reason is not None:
            raise ValueError(
                f"withdrawal_reason: only a withdrawal by the investigator has one, not "
                f"{self.disposition.value}"
            )
        return self


class MeddraCoding(BaseModel):
    """MedDRA coding as the source gave it (never invented: the dictionary is licensed and not
    shipped). Every level optional; a level's code is MedDRA's 8-digit number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: NonEmptyStr | None = Field(default=None, description="e.g. 26.0")
    llt: NonEmptyStr | None = None
    llt_code: MeddraCode | None = None
    pt: NonEmptyStr | None = None
    pt_code: MeddraCode | None = None
    hlt: NonEmptyStr | None = None
    hlt_code: MeddraCode | None = None
    hlgt: NonEmptyStr | None = None
    hlgt_code: MeddraCode | None = None
    soc: NonEmptyStr | None = None
    soc_code: MeddraCode | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        levels = ("llt", "pt", "hlt", "hlgt", "soc")
        if not any(getattr(self, n) or getattr(self, f"{n}_code") for n in levels):
            raise ValueError("meddra: coding with no level; leave meddra out for an uncoded AE")
        return self


class ParticipantEnrolled(ClinicalEnvelope):
    event_type: Literal["participant.enrolled"] = "participant.enrolled"
    sex: Sex = Field(description="Sex at birth, F or M, as CKD-EPI 2021 needs it")
    birth_date: date | None = None
    age_years: Annotated[int, Accepting(ge=AGE_MIN, le=AGE_MAX)] | None = Field(
        default=None, description="Age at enrolment"
    )
    weight_kg: Annotated[float, Accepting(gt=20, le=350)] | None = None
    site_id: NonEmptyStr
    enrolled_at: Instant

    @model_validator(mode="after")
    def _needs_an_age(self, info: ValidationInfo) -> Self:
        if self.birth_date is None and self.age_years is None:
            raise ValueError("age_years: give birth_date or age_years (CKD-EPI needs the age)")
        if self.birth_date is not None and self.birth_date >= self.enrolled_at.date():
            raise ValueError("birth_date: must be before enrolled_at")
        if self.birth_date is not None and not replaying(info):
            # bounded as age_years is: a birth date is an age at enrolment
            age = whole_years(self.birth_date, clinical_date(self.enrolled_at))
            if not AGE_MIN <= age <= AGE_MAX:
                raise ValueError(
                    f"birth_date: gives an age of {age} at enrolment; the trial enrols adults "
                    f"of {AGE_MIN}-{AGE_MAX}"
                )
        return self


class DoseAdministered(ClinicalEnvelope):
    event_type: Literal["dose.administered"] = "dose.administered"
    cells_total: Annotated[float, Accepting(gt=0, le=1e12)] = Field(
        description="Viable cells injected"
    )
    weight_kg: Annotated[float, Accepting(gt=20, le=350)] = Field(
        description="Body weight used to compute the dose"
    )
    route: Literal["intra-renal"] = "intra-renal"
    lot: NonEmptyStr

    @property
    def cells_per_kg(self) -> float:
        return self.cells_total / self.weight_kg


class VisitCompleted(ClinicalEnvelope):
    event_type: Literal["visit.completed"] = "visit.completed"
    visit: Visit


class LabResulted(ClinicalEnvelope):
    """A lab value, always in its analyte's canonical unit once validated.

    A value sent in another accepted unit is converted here and the original kept beside it;
    a censored value (`comparator` set, e.g. "<0.2") is kept but no numeric rule reads it.
    """

    event_type: Literal["lab.resulted"] = "lab.resulted"
    visit: Visit | None = Field(default=None, description="Protocol visit, if the sample had one")
    analyte: Analyte
    value: float
    unit: str
    comparator: Comparator | None = None
    loinc: str | None = Field(default=None, pattern=r"^\d{1,7}-\d$")
    original_value: float | None = None
    original_unit: Annotated[str, Accepting(max_length=40)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise_unit(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        analyte, value, unit = data.get("analyte"), data.get("value"), data.get("unit")
        a = _ANALYTES.get(analyte) if isinstance(analyte, str) else None
        if a is None or not isinstance(unit, str):
            return data  # field validation names what is missing or wrong
        if isinstance(value, bool) or not isinstance(value, int | float):
            return data
        if not math.isfinite(value):
            raise ValueError("value: must be a finite number")
        canonical = canonical_unit(a)
        try:
            if fold_unit(unit) == canonical:
                if not replaying(info):  # a recorded value is decoded as it was accepted
                    check_range(a, float(value))
                return data if unit == canonical else {**data, "unit": canonical}
            converted = normalise(a, float(value), unit, check=not replaying(info))
        except UnitError as e:
            field = "value" if "range" in str(e) else "unit"
            raise ValueError(f"{field}: {e}") from None
        return {
            **data,
            "value": converted,
            "unit": canonical,
            "original_value": value,
            "original_unit": unit,
        }

    @field_validator("unit")
    @classmethod
    def _unit_is_canonical(cls, unit: str) -> str:
        if unit not in _CANONICAL_UNITS:
            raise ValueError(f"unit {unit!r} is not a known lab unit")
        return unit

    @property
    def is_numeric(self) -> bool:
        """Whether numeric rules may read this value (a censored value is not a number)."""
        return self.comparator is None


class _AdverseEventFields(ClinicalEnvelope):
    ae_id: NonEmptyStr = Field(description="The site's AE identifier; updates repeat it")
    term: NonEmptyStr = Field(description="Verbatim or MedDRA preferred term")
    onset_date: PartialDate
    end_date: PartialDate | None = None
    ctcae_grade: int = Field(ge=1, le=5)
    serious: bool
    seriousness_criteria: list[SeriousnessCriterion] = Field(default_factory=list)
    relatedness: Relatedness = Field(
        default=Relatedness.NOT_ASSESSED,
        description="Investigator's causality; not_assessed (the default) counts as related "
        "for the SUSAR clock and the stopping rule until assessed",
    )
    expectedness: Expectedness | None = Field(
        default=None,
        description="Against the reference safety information; None while not yet assessed, "
        "which counts as unexpected",
    )
    aware_at: Instant | None = Field(
        default=None,
        description="When the site first knew of the AE; regulatory clocks count from it "
        "(else from recorded_at)",
    )
    local_or_systemic: Locality | None = None
    outcome: AeOutcome = AeOutcome.UNKNOWN
    meddra: MeddraCoding | None = Field(
        default=None, description="MedDRA coding as the source gave it; None: not coded"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.seriousness_criteria and not self.serious:
            raise ValueError(
                "serious: is false but seriousness_criteria are given; an AE meeting a "
                "seriousness criterion is serious"
            )
        if self.serious and not self.seriousness_criteria:
            raise ValueError("seriousness_criteria: a serious AE must name at least one criterion")
        if len(set(self.seriousness_criteria)) != len(self.seriousness_criteria):
            raise ValueError("seriousness_criteria: a criterion is listed twice")
        if self.ctcae_grade == 5 and self.outcome is not AeOutcome.FATAL:
            raise ValueError("outcome: a CTCAE grade 5 AE is a death; outcome must be fatal")
        if self.outcome is AeOutcome.FATAL and not self.serious:
            raise ValueError(
                "serious: an AE with outcome fatal is serious (criterion death); it was sent "
                "as not serious"
            )
        return self


class AeReported(_AdverseEventFields):
    event_type: Literal["ae.reported"] = "ae.reported"


class AeUpdated(_AdverseEventFields):
    """A follow-up of an AE: repeats the full AE as now known."""

    event_type: Literal["ae.updated"] = "ae.updated"
