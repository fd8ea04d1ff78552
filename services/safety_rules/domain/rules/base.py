"""What a rule returns: a draft the engine turns into an `alert.raised` event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from contracts import ClinicalEvent, Severity
from services.safety_rules.domain.config import RulesConfig
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


class ParticipantRule(Protocol):
    rule_id: ClassVar[str]
    version: ClassVar[int]

    def check(self, p: ParticipantState, event: ClinicalEvent, cfg: RulesConfig) -> list[Draft]: ...
