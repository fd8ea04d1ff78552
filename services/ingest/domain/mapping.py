"""What every importer returns: events to accept, and rows refused with a reason.

Nothing is dropped silently: a row either becomes an event, or a `Rejection` naming the row,
the field and why; questionable but mappable rows carry a `Note` (e.g. AESER=N with AESHOSP=Y).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

IMPORT_NAMESPACE = uuid.UUID("3f0e7a5c-1c55-4b8e-9d3e-6a2b9c0d4e11")


def stable_id(*parts: str) -> str:
    """The event_id of an imported record: the same record imported twice is the same event."""
    return str(uuid.uuid5(IMPORT_NAMESPACE, "|".join(parts)))


@dataclass(frozen=True)
class Rejection:
    row: str  # where: "row 17" of a file, "entry 3 (Observation/f204)" of a Bundle
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"row": self.row, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class Note:
    row: str
    note: str


@dataclass
class Mapped:
    """Events (flat contract dicts, without the server's fields) with where they came from."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def extend(self, other: Mapped) -> None:
        self.events += other.events
        self.rejections += other.rejections
        self.notes += other.notes


class RowError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


_ISO_DT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?$")
_PARTIAL = re.compile(r"^\d{4}(-\d{2})?$")
_CENSORED = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*$")


def complete_datetime(value: str, field_name: str, zone: tzinfo) -> datetime:
    """An SDTM --DTC that is at least a full date, read in `zone` when it has no offset. A
    partial date is an error here: a clinical time is never invented."""
    text = value.strip()
    if not text:
        raise RowError(field_name, "is blank")
    if _PARTIAL.match(text):
        raise RowError(field_name, f"{text!r} is a partial date; a complete date is needed")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(field_name, f"{text!r} is not an ISO 8601 date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def partial_date(value: str) -> str | None:
    """The date part of an SDTM --DTC, complete or partial (2014-03, 2014), as it was given."""
    text = value.strip()
    if not text:
        return None
    return text.split("T", 1)[0]


def number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def censored(value: str) -> tuple[str, float] | None:
    """('<', 0.2) for a text result such as '<0.2'."""
    m = _CENSORED.match(value or "")
    return (m.group(1), float(m.group(2))) if m else None


# -- where an AE happened: local (at the injection) or systemic -------------------------------
# The protocol gives one intra-renal injection: a local reaction is one at the injection, in or
# around the injected kidney or the needle's way to it; an AE anywhere else is systemic.
LOCAL_SITE_WORDS = ("kidney", "renal", "flank", "injection site", "puncture site",
                    "administration site", "application site")  # fmt: skip
SNOMED = "http://snomed.info/sct"
LOCAL_SITE_SNOMED = {
    "64033007": "Kidney structure",
    "9846003": "Right kidney structure",
    "18639004": "Left kidney structure",
}
LOCALITY_WORDS = {"local": "local", "l": "local", "systemic": "systemic", "s": "systemic"}


def locality_of_site(text: str, codes: Iterable[tuple[str, str]] = ()) -> str:
    """`local` for a body site at the injection (a kidney by SNOMED code or by name, the flank, the
    injection or puncture site), else `systemic`: a site was named, and it is elsewhere."""
    if any(system == SNOMED and code in LOCAL_SITE_SNOMED for system, code in codes):
        return "local"
    words = text.lower()
    return "local" if any(w in words for w in LOCAL_SITE_WORDS) else "systemic"
