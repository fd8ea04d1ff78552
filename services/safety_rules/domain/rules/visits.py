"""visit.overdue: a time-based rule, evaluated at an explicit `now` (never the wall clock)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from clinical.course import owes
from contracts import Severity, Visit
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.rules.base import Draft
from services.safety_rules.domain.state import ParticipantState


class VisitOverdue:
    """A protocol visit whose window (days from the dose: M1 30 +/- 7, M3 91, M6 182, M9 273,
    M12 365, each +/- 14) has closed with no visit.completed, before the participant's
    schedule ended (clinical.course: a disposition, a fatal AE)."""

    rule_id: ClassVar[str] = "visit.overdue"
    version: ClassVar[int] = 1

    def due(
        self, p: ParticipantState, now: datetime, cfg: RulesConfig
    ) -> list[tuple[Draft, datetime]]:
        """Drafts with the moment each visit became overdue (the end of its window)."""
        t = cfg.visit_overdue
        first = p.first_dose  # windows stay anchored on the first dose, whatever follows
        if first is None:
            return []
        done = p.visits()
        end = p.schedule_end  # a disposition or a death: nothing owed after it
        out = []
        for visit, (day, tolerance) in t.windows.items():
            closes = first.at + timedelta(days=day + tolerance)
            if now <= closes or Visit(visit).value in done or not owes(closes.date(), end):
                continue
            out.append(
                (
                    Draft(
                        self.rule_id,
                        self.version,
                        Severity.MEDIUM,
                        f"Visit {visit} overdue: window closed {closes.date().isoformat()}",
                        trigger=visit,
                        evidence=(first.event_id,),
                        thresholds={"visit": visit, "target_day": day, "tolerance_days": tolerance},
                        facts={
                            "window_closed": closes.isoformat(),
                            "dose_date": first.at.date().isoformat(),
                        },
                    ),
                    closes,
                )
            )
        return out
