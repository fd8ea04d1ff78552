"""The envelope every event carries, and the small value types the event families share.

Events are facts: frozen, flat JSON objects (the envelope fields plus the type's own fields),
unknown fields refused, timestamps always with a time zone.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Self
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

# A pseudonymous code: letters, digits and . _ - only, with at least one digit, so that a
# name ("Jane Doe", "JaneDoe") can never pass for an identifier. Examples: DN-001, 01-701-1015,
# a Synthea UUID.
_PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")


def _check_participant_id(value: str) -> str:
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces; use the pseudonymous code (e.g. DN-001)")
    if not _PARTICIPANT_ID.match(value):
        raise ValueError(
            "must be a pseudonymous code of 2-64 letters, digits, '.', '_' or '-' (e.g. DN-001)"
        )
    if not any(ch.isdigit() for ch in value):
        raise ValueError(
            "looks like a name, not a pseudonymous code: it must contain a digit (e.g. DN-001)"
        )
    return value


ParticipantId = Annotated[str, AfterValidator(_check_participant_id)]

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def _check_partial_date(value: str) -> str:
    m = _PARTIAL_DATE.match(value)
    if not m:
        raise ValueError(
            "must be an ISO 8601 date, complete (2014-03-07) or partial (2014-03, 2014)"
        )
    year, month, day = (int(g) if g else None for g in m.groups())
    if month is not None and not 1 <= month <= 12:
        raise ValueError(f"month {month} is not 01-12")
    if day is not None:
        assert year is not None and month is not None
        date(year, month, day)  # raises ValueError naming the impossible day
    return value


# A clinical date known perhaps only to the month or year (SDTM --DTC); never completed by guess.
PartialDate = Annotated[str, AfterValidator(_check_partial_date)]

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=200)]


class Source(StrEnum):
    API = "api"
    FHIR = "fhir"
    SDTM = "sdtm"
    SAFETY_RULES = "safety_rules"
    NOTIFIER = "notifier"
    DEMO = "demo"
    TEST = "test"


class Envelope(BaseModel):
    """Fields every event carries. `event_id` is the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    event_id: UUID
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    trial_id: NonEmptyStr
    occurred_at: AwareDatetime = Field(description="Clinical time, e.g. sample collection")
    recorded_at: AwareDatetime = Field(description="When the system of record received the fact")
    recorded_by: NonEmptyStr = Field(description="The authenticated writer (site key, service)")
    source: Source
    supersedes: UUID | None = Field(
        default=None, description="For a correction: the event_id this event corrects"
    )
    reason: str | None = Field(
        default=None, max_length=2000, description="Why: required with `supersedes`"
    )

    @model_validator(mode="after")
    def _correction_needs_reason(self) -> Self:
        if self.supersedes is not None and not (self.reason and self.reason.strip()):
            raise ValueError("reason: a correction (supersedes is set) must give a reason")
        if self.supersedes is not None and self.supersedes == self.event_id:
            raise ValueError("supersedes: an event cannot correct itself")
        return self


class ClinicalEnvelope(Envelope):
    """A participant-level clinical fact, keyed by participant on `trial.events`."""

    participant_id: ParticipantId
