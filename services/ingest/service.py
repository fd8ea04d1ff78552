"""Accepting events: validate, authorise, drop duplicates, append to the log, record.

Two modes share every step. `accept` (the JSON API) takes a batch whole or not at all: one bad
event refuses the batch, naming its index, field and reason. `accept_each` (file imports, FHIR
Bundles) rejects bad records one by one and accepts the rest. Writes go one by one, each
acknowledged by Kafka before it is recorded as accepted; if Kafka fails midway the caller gets
LogUnavailable (HTTP 503) and retries the same request, and the events that did land are then
recognised as duplicates. Nothing accepted is lost; nothing is called accepted that Kafka did
not acknowledge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from contracts import ClinicalEvent, FieldError, InvalidEvent, ParticipantEnrolled, parse_event
from contracts.topics import TRIAL_EVENTS
from services.ingest.adapters.kafka_log import EventLog, Position
from services.ingest.adapters.store import Accepted, IngestStore
from services.ingest.domain.mapping import Rejection
from services.ingest.domain.policy import Principal, authorize, content_hash, stamp


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Result:
    where: str
    event: ClinicalEvent
    outcome: Outcome
    position: Position | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
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


_CONFLICT = FieldError(
    "event_id",
    "already used for different content; to change an accepted "
    "event send a correction (supersedes) with a new event_id",
)


@dataclass
class _Checked:
    ok: list[tuple[int, ClinicalEvent]]
    errors: list[tuple[int, FieldError, int]]  # (index, error, HTTP status it calls for)
    known: dict[str, str]


class Ingest:
    def __init__(self, store: IngestStore, log: EventLog, clock: Callable[[], datetime]) -> None:
        self.store, self.log, self.clock = store, log, clock

    async def _check(self, bodies: Sequence[Any], who: Principal, source: str) -> _Checked:
        now = self.clock().astimezone(UTC).isoformat()
        errors: list[tuple[int, FieldError, int]] = []
        parsed: list[tuple[int, ClinicalEvent]] = []
        for i, body in enumerate(bodies):
            if not isinstance(body, dict):
                errors.append((i, FieldError("(event)", "an event must be a JSON object"), 422))
                continue
            try:
                event = parse_event(stamp(body, who, source, now))
            except InvalidEvent as e:
                errors += [(i, err, 422) for err in e.errors]
                continue
            if event.event_type not in TRIAL_EVENTS.event_types:
                errors.append(
                    (
                        i,
                        FieldError(
                            "event_type",
                            f"{event.event_type} is raised by the system, not submitted",
                        ),
                        422,
                    )
                )
                continue
            parsed.append((i, event))  # type: ignore[arg-type]
        site_of = await self.store.sites_of(e.participant_id for _, e in parsed)
        allowed: list[tuple[int, ClinicalEvent]] = []
        for i, event in parsed:
            why = authorize(event, who, site_of)
            if why is not None:
                errors.append((i, why, 422 if "unknown participant" in why.reason else 403))
                continue
            if isinstance(event, ParticipantEnrolled):
                site_of.setdefault(event.participant_id, event.site_id)
            allowed.append((i, event))
        known = await self.store.accepted(str(e.event_id) for _, e in allowed)
        ok = []
        for i, event in allowed:
            eid = str(event.event_id)
            if eid in known and known[eid] != content_hash(event):
                errors.append((i, _CONFLICT, 409))
            else:
                ok.append((i, event))
        return _Checked(ok, sorted(errors, key=lambda e: e[0]), known)

    async def accept(self, bodies: Sequence[Any], who: Principal, source: str) -> list[Result]:
        """All or nothing: any error refuses the whole batch (Refused)."""
        checked = await self._check(bodies, who, source)
        if checked.errors:
            status = max(s for _, _, s in checked.errors)
            raise Refused(status, [(i, e) for i, e, _ in checked.errors])
        return await self._write([(f"index {i}", e) for i, e in checked.ok], checked.known)

    async def accept_each(
        self, items: Sequence[tuple[str, dict[str, Any]]], who: Principal, source: str
    ) -> tuple[list[Result], list[Rejection]]:
        """Record by record: bad ones become rejections; the good ones are accepted."""
        checked = await self._check([body for _, body in items], who, source)
        rejections = [Rejection(items[i][0], e.field, e.reason) for i, e, _ in checked.errors]
        good = [(items[i][0], e) for i, e in checked.ok]
        return await self._write(good, checked.known), rejections

    async def _write(
        self, events: list[tuple[str, ClinicalEvent]], known: dict[str, str]
    ) -> list[Result]:
        results: list[Result] = []
        seen: set[str] = set()
        try:
            for where, event in events:
                eid = str(event.event_id)
                if eid in known or eid in seen:
                    results.append(Result(where, event, Outcome.DUPLICATE))
                    continue
                position = await self.log.append(event)
                seen.add(eid)
                results.append(Result(where, event, Outcome.ACCEPTED, position))
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
