"""Accepting events: validate, authorise, drop duplicates, append to the log, record.

A batch is validated and authorised whole before anything is written: one bad event refuses the
batch, naming its index, field and reason. Writes then go one by one, each acknowledged by Kafka
before it is recorded as accepted; if Kafka fails mid-batch the caller gets 503 and retries the
same batch, and the events that did land are recognised as duplicates. Nothing accepted is lost,
and nothing is reported accepted that Kafka did not acknowledge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from contracts import ClinicalEvent, FieldError, InvalidEvent, ParticipantEnrolled, parse_event
from contracts.topics import TRIAL_EVENTS
from services.ingest.adapters.kafka_log import EventLog, Position
from services.ingest.adapters.store import Accepted, IngestStore
from services.ingest.domain.policy import Principal, authorize, content_hash, stamp


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Result:
    index: int
    event: ClinicalEvent
    outcome: Outcome
    position: Position | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "event_id": str(self.event.event_id),
            "event_type": self.event.event_type,
            "outcome": self.outcome.value,
        }
        if self.position is not None:
            out["partition"], out["offset"] = self.position.partition, self.position.offset
        return out


@dataclass
class Refused(Exception):
    """The batch was refused whole; `errors` hold (index, field, reason)."""

    status: int
    errors: list[tuple[int, FieldError]] = field(default_factory=list)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{"index": i, "field": e.field, "reason": e.reason} for i, e in self.errors]


class Ingest:
    def __init__(self, store: IngestStore, log: EventLog, clock: Callable[[], datetime]) -> None:
        self.store, self.log, self.clock = store, log, clock

    def validate(self, bodies: list[Any], principal: Principal, source: str) -> list[ClinicalEvent]:
        now = self.clock().astimezone(UTC).isoformat()
        events: list[ClinicalEvent] = []
        errors: list[tuple[int, FieldError]] = []
        for i, body in enumerate(bodies):
            if not isinstance(body, dict):
                errors.append((i, FieldError("(event)", "an event must be a JSON object")))
                continue
            try:
                event = parse_event(stamp(body, principal, source, now))
            except InvalidEvent as e:
                errors += [(i, err) for err in e.errors]
                continue
            if event.event_type not in TRIAL_EVENTS.event_types:
                errors.append(
                    (
                        i,
                        FieldError(
                            "event_type",
                            f"{event.event_type} is raised by the system, not submitted",
                        ),
                    )
                )
                continue
            events.append(event)  # type: ignore[arg-type]
        if errors:
            raise Refused(422, errors)
        return events

    async def accept(self, bodies: list[Any], principal: Principal, source: str) -> list[Result]:
        events = self.validate(bodies, principal, source)
        site_of = await self.store.sites_of(e.participant_id for e in events)
        denied: list[tuple[int, FieldError]] = []
        for i, event in enumerate(events):
            if event.event_type == "participant.enrolled":
                site_of.setdefault(event.participant_id, event.site_id)
            why = authorize(event, principal, site_of)
            if why is not None:
                denied.append((i, why))
        if denied:
            status = (
                422
                if all(e.field == "participant_id" and "unknown" in e.reason for _, e in denied)
                else 403
            )
            raise Refused(status, denied)

        known = await self.store.accepted(str(e.event_id) for e in events)
        conflicts = [
            (
                i,
                FieldError(
                    "event_id",
                    "already used for different content; to change an "
                    "accepted event send a correction (supersedes) with a new event_id",
                ),
            )
            for i, e in enumerate(events)
            if str(e.event_id) in known and known[str(e.event_id)] != content_hash(e)
        ]
        if conflicts:
            raise Refused(409, conflicts)

        results: list[Result] = []
        seen: set[str] = set()
        try:
            for i, event in enumerate(events):
                eid = str(event.event_id)
                if eid in known or eid in seen:
                    results.append(Result(i, event, Outcome.DUPLICATE))
                    continue
                position = await self.log.append(event)
                seen.add(eid)
                results.append(Result(i, event, Outcome.ACCEPTED, position))
        finally:
            await self._record([r for r in results if r.outcome is Outcome.ACCEPTED])
        return results

    async def _record(self, results: list[Result]) -> None:
        rows = [
            Accepted(
                str(r.event.event_id),
                content_hash(r.event),
                r.event.event_type,
                r.event.participant_id,
                r.position.topic,
                r.position.partition,
                r.position.offset,
                r.event.recorded_by,
            )
            for r in results
            if r.position is not None
        ]
        enrolled = [
            (e.participant_id, e.trial_id, e.site_id)
            for e in (r.event for r in results)
            if isinstance(e, ParticipantEnrolled)
        ]
        await self.store.record(rows, enrolled)
