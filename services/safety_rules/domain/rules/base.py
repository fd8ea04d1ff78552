"""What a rule returns: a draft the engine turns into an `alert.raised` event.

Rules come in three kinds. A lab rule judges one result at its place in clinical time (the engine
calls it for every result an event made dirty, late or not); an AE rule judges one AE report or
follow-up; the dose rules judge the participant's doses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from clinical.bounds import Bound
from contracts import AeReported, AeUpdated, Severity
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.series import Point
from services.safety_rules.domain.state import ParticipantState


@dataclass(frozen=True)
class Draft:
    rule_id: str
    rule_version: int
    severity: Severity
    title: str
    trigger: str  # what makes this firing unique: same trigger, same alert_id
    evidence: tuple[str, ...]
    thresholds: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    due_by: datetime | None = None
    at: datetime | None = None  # the clinical time of what triggered it
    site: tuple[str, str] | None = None  # (measure, event_id) a lab rule judged; set by the engine


class LabRule(Protocol):
    rule_id: ClassVar[str]
    version: ClassVar[int]
    measure: ClassVar[str]

    def check(self, p: ParticipantState, point: Point, cfg: RulesConfig) -> list[Draft]: ...


class AeRule(Protocol):
    rule_id: ClassVar[str]
    version: ClassVar[int]

    def check(
        self, p: ParticipantState, ae: AeReported | AeUpdated, cfg: RulesConfig
    ) -> list[Draft]: ...


class DoseRule(Protocol):
    rule_id: ClassVar[str]
    version: ClassVar[int]

    def check(self, p: ParticipantState, cfg: RulesConfig) -> list[Draft]: ...


def day(at: datetime) -> str:
    return at.date().isoformat()


def shown(b: Bound, digits: int = 1) -> float | str:
    """A value for an alert's facts: the number when exact, else the bound as reported (`<15`)."""
    return round(b.lo, digits) if b.exact else b.text()
