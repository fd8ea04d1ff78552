"""Builders that read as the trial does: a_participant().enrolled().dosed(on=...).lab(...)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from contracts import AlertRaised, ClinicalEvent, parse_event
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.evaluate import run

DAY0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_UNITS = {
    "creatinine": "mg/dL",
    "egfr": "mL/min/1.73m2",
    "uacr": "mg/g",
    "tnf_alpha": "pg/mL",
    "il_10": "pg/mL",
}


class ParticipantBuilder:
    def __init__(self, pid: str = "DN-001") -> None:
        self.pid = pid
        self._events: list[ClinicalEvent] = []
        self._n = 0

    def _add(self, event_type: str, day: float, **fields: Any) -> Self:
        self._n += 1
        at = DAY0 + timedelta(days=day)
        data = {
            "event_type": event_type,
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.pid}/{self._n}/{event_type}")),
            "trial_id": "UCMSC-DN-01",
            "participant_id": self.pid,
            "occurred_at": at.isoformat(),
            "recorded_at": (at + timedelta(hours=1)).isoformat(),
            "recorded_by": "site:test",
            "source": "test",
            **fields,
        }
        self._events.append(parse_event(data))  # type: ignore[arg-type]
        return self

    def enrolled(self, sex: str = "M", age: int = 50, day: float = -10) -> Self:
        return self._add(
            "participant.enrolled",
            day,
            sex=sex,
            age_years=age,
            weight_kg=70,
            site_id="s1",
            enrolled_at=(DAY0 + timedelta(days=day)).isoformat(),
        )

    def dosed(self, day: float = 0, cells_per_kg: float = 1e6, weight: float = 70) -> Self:
        return self._add(
            "dose.administered", day, cells_total=cells_per_kg * weight, weight_kg=weight, lot="L1"
        )

    def visit(self, visit: str, day: float) -> Self:
        return self._add("visit.completed", day, visit=visit)

    def lab(
        self,
        analyte: str,
        value: float,
        day: float,
        visit: str | None = None,
        unit: str | None = None,
        **extra: Any,
    ) -> Self:
        return self._add(
            "lab.resulted",
            day,
            analyte=analyte,
            value=value,
            unit=unit or _UNITS[analyte],
            visit=visit,
            **extra,
        )

    def baseline(self, analyte: str, value: float, day: float = -5) -> Self:
        return self.lab(analyte, value, day, visit="baseline")

    def ae(self, ae_id: str = "AE-1", day: float = 5, updated: bool = False, **fields: Any) -> Self:
        ae: dict[str, Any] = {
            "ae_id": ae_id,
            "term": "Flank pain",
            "onset_date": "2026-03-07",
            "ctcae_grade": 1,
            "serious": False,
            "relatedness": "not_related",
            "expectedness": "expected",
            "local_or_systemic": "local",
            "outcome": "recovering",
        }
        ae.update(fields)
        if ae["serious"] and "seriousness_criteria" not in fields:
            ae["seriousness_criteria"] = ["hospitalization"]
        return self._add("ae.updated" if updated else "ae.reported", day, **ae)

    def left(self, disposition: str, day: float, **fields: Any) -> Self:
        """A disposition on study day `day` (withdrawn_by_investigator needs withdrawal_reason)."""
        on = (DAY0 + timedelta(days=day)).date().isoformat()
        return self._add(
            "participant.disposition", day, disposition=disposition, disposition_date=on, **fields
        )

    def corrected(self, index: int, reason: str = "transcription error", **fields: Any) -> Self:
        """A correction of the index-th event with some fields changed."""
        old = self._events[index].model_dump(mode="json")
        self._n += 1
        data = {
            **old,
            **fields,
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.pid}/{self._n}/fix")),
            "supersedes": old["event_id"],
            "reason": reason,
        }
        for k in ("original_value", "original_unit"):
            data.pop(k, None)
        self._events.append(parse_event(data))  # type: ignore[arg-type]
        return self

    def events(self) -> list[ClinicalEvent]:
        return list(self._events)


def a_participant(pid: str = "DN-001") -> ParticipantBuilder:
    return ParticipantBuilder(pid)


def alerts_of(
    events: list[ClinicalEvent], as_of: datetime | None = None, cfg: RulesConfig | None = None
) -> list[AlertRaised]:
    return run(events, cfg or RulesConfig(), as_of)


def rules_raised(
    events: list[ClinicalEvent], as_of: datetime | None = None, cfg: RulesConfig | None = None
) -> list[tuple[str, str]]:
    return [(a.rule_id, a.severity.value) for a in alerts_of(events, as_of, cfg)]
