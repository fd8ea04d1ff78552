"""The envelope every event carries, and the small value types the event families share.

Events are facts: frozen, flat JSON objects (the envelope fields plus the type's own fields),
unknown fields refused, timestamps always with a time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

SCHEMA_VERSION = 1

# Two ways into the typed world (contracts.events): *accepting* a fact at the door checks every
# bound below; *decoding* a fact already on a topic (a consumer, a replay) checks shape and types
# only, so tightening a bound later never turns a recorded fact into a dead letter.
REPLAY = "replay"  # validation-context flag: decoding, not accepting
WINDOW = "window"  # validation-context entry: (earliest, latest) an accepted instant may name


def replaying(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(REPLAY))


@dataclass(frozen=True)
class Accepting:
    """A bound checked when a fact is accepted, never when it is decoded from a topic.

    `Annotated[float, Accepting(gt=20, le=350)]`; the JSON Schema states it as usual."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    max_length: int | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        for key, value in (
            ("exclusiveMinimum", self.gt),
            ("minimum", self.ge),
            ("maximum", self.le),
            ("maxLength", self.max_length),
        ):
            if value is not None:
                out[key] = value
        return out

    def _check(self, value: Any, info: ValidationInfo) -> Any:
        if value is None or replaying(info):
            return value
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"is {len(value)} characters long; at most {self.max_length}")
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"must be greater than {self.gt:g}")
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"must be at least {self.ge:g}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"must be at most {self.le:g}")
        return value


def _check_instant(value: datetime, info: ValidationInfo) -> datetime:
    try:
        at = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is not a time that exists in UTC (year out of range)") from None
    window = info.context.get(WINDOW) if info.context and not replaying(info) else None
    if window is not None:
        earliest, latest = window
        if not earliest <= at <= latest:
            raise ValueError(
                f"{at.isoformat()} is outside the accepted window "
                f"{earliest.isoformat()} .. {latest.isoformat()}"
            )
    return value


# A point in time: with a zone, convertible to UTC (year 1-9999 there), and when accepted at the
# door within the window ingest passes (e.g. 1900 to now + 1 day).
Instant = Annotated[AwareDatetime, AfterValidator(_check_instant)]

# A pseudonymous code: letters, digits and . _ - only, with at least one digit, so that a
# name ("Jane Doe", "JaneDoe") can never pass for an identifier. Examples: DN-001, 01-701-1015,
# a Synthea UUID.
_PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
_DIGIT = re.compile(r"[0-9]")


def _check_participant_id(value: str) -> str:
    if _PARTICIPANT_ID.fullmatch(value) and _DIGIT.search(value):
        return value  # the common case, checked at C speed (the reasons follow otherwise)
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

NAME_MAX = 200  # names, ids and titles
TEXT_MAX = 2000  # free text
NonEmptyStr = Annotated[str, Field(min_length=1), Accepting(max_length=NAME_MAX)]
# Free text (reasons, notes, errors): bounded at the door.
Text = Annotated[str, Accepting(max_length=TEXT_MAX)]

# Whitespace other than the plain space, control and format characters (line breaks, tabs, NUL,
# bidi overrides, zero-width joiners), and lone surrogates (which no encoder writes)
_NOT_ON_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u206f"
                              r"\ufeff\ufff9-\ufffb\ud800-\udfff\s]+")  # fmt: skip
ELLIPSIS = "\u2026"


def summary(text: str, limit: int = NAME_MAX) -> str:
    """`text` as one line of at most `limit` characters, for a title, a subject or a header: each
    run of whitespace, control or invisible characters one space, and past `limit` cut with an
    ellipsis. A summary never refuses: an alert is never lost to the length of what it quotes."""
    line = _NOT_ON_ONE_LINE.sub(" ", text).strip()
    if len(line) > limit:
        line = line[: max(limit - 1, 0)].rstrip() + ELLIPSIS
    return line


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

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_enum_values=False, allow_inf_nan=False
    )

    event_id: UUID
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    trial_id: NonEmptyStr
    occurred_at: Instant = Field(description="Clinical time, e.g. sample collection")
    recorded_at: Instant = Field(description="When the system of record received the fact")
    recorded_by: NonEmptyStr = Field(description="The authenticated writer (site key, service)")
    source: Source
    supersedes: UUID | None = Field(
        default=None, description="For a correction: the event_id this event corrects"
    )
    reason: Text | None = Field(default=None, description="Why: required with `supersedes`")

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
