"""Accepting events: validate, authorise, drop duplicates, append to the log, record.

Two modes share every step. `accept` (the JSON API) takes a batch whole or not at all: one bad
event refuses the batch, naming its index, field and reason. `accept_each` (file imports, FHIR
Bundles) rejects bad records one by one and accepts the rest. Each new event_id is first
reserved in the database (one writer per id, however many requests race), then written to
Kafka and acknowledged, then recorded as accepted; if Kafka fails midway the caller gets
LogUnavailable (HTTP 503) and retries the same request, and the events that did land are then
recognised as duplicates. Nothing accepted is lost; nothing is called accepted that Kafka did
not acknowledge.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from contracts import (
    ClinicalEvent,
    FieldError,
    InvalidEvent,
    ParticipantEnrolled,
    decode,
    parse_event,
)
from contracts.topics import TRIAL_EVENTS
from services.ingest.adapters.kafka_log import EventLog, LogUnavailable, Position
from services.ingest.adapters.store import Accepted, IngestStore, Unknown
from services.ingest.domain.mapping import Rejection
from services.ingest.domain.policy import (
    ENROLLED_ELSEWHERE,
    Acceptance,
    Principal,
    authorize,
    encoded,
    scoped_to_site,
    spelled_apart,
    spelling_key,
    stamp,
)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Result:
    where: str
    event: ClinicalEvent
    event_id: str  # str(event.event_id), made once (a UUID's str is made anew at each call)
    outcome: Outcome
    position: Position | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
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
_IMPORTS = ("fhir", "sdtm")
# a 503 that is not Kafka's: the request waited its time for another one writing its events
STILL_WRITING = "another request is still writing the same event"


class _Oversized(InvalidEvent):
    """Valid, but too large to go on the log as one message (413)."""


Ready = tuple[ClinicalEvent, bytes, str]  # an event, its encoding and its content hash


@dataclass
class _Checked:
    ok: list[tuple[int, Ready]]
    errors: list[tuple[int, FieldError, int]]  # (index, error, HTTP status it calls for)


class Ingest:
    def __init__(
        self,
        store: IngestStore,
        log: EventLog,
        clock: Callable[[], datetime],
        acceptance: Acceptance,
        *,
        in_flight_s: float = 30.0,
    ) -> None:
        self.store, self.log, self.clock, self.acceptance = store, log, clock, acceptance
        # A reservation older than this belongs to a writer that died before confirming.
        self.in_flight_s = in_flight_s

    def _parse(
        self,
        body: Any,
        who: Principal,
        source: str,
        now_iso: str,
        window: tuple[datetime, datetime],
    ) -> Ready:
        """The event, its encoding (what goes on the log, encoded once) and content hash.
        (`now_iso` and `window`, the request's time as text and the instants it accepts, are
        the same for every event of a request: made once.)"""
        if not isinstance(body, dict):
            raise InvalidEvent([FieldError("(event)", "an event must be a JSON object")])
        event = parse_event(stamp(body, who, source, now_iso), window=window)
        if event.event_type not in TRIAL_EVENTS.event_types:
            raise InvalidEvent(
                [
                    FieldError(
                        "event_type", f"{event.event_type} is raised by the system, not submitted"
                    )
                ]
            )
        why = self.acceptance.trial(event.trial_id) or self.acceptance.participant(
            event.trial_id, event.participant_id or ""
        )
        if why is not None:
            raise InvalidEvent([why])
        (wire, digest), limit = encoded(event), self.acceptance.max_event_bytes  # type: ignore[arg-type]
        if len(wire) > limit:
            raise _Oversized([FieldError("(event)", f"{len(wire)} bytes encoded; at most {limit}")])
        return event, wire, digest  # type: ignore[return-value]

    async def _check(self, bodies: Sequence[Any], who: Principal, source: str) -> _Checked:
        now = self.clock().astimezone(UTC)
        now_iso, window = now.isoformat(), self.acceptance.window(now)
        errors: list[tuple[int, FieldError, int]] = []
        parsed: list[tuple[int, Ready]] = []
        for i, body in enumerate(bodies):
            try:
                parsed.append((i, self._parse(body, who, source, now_iso, window)))
            except InvalidEvent as e:
                status = 413 if isinstance(e, _Oversized) else 422
                errors += [(i, err, status) for err in e.errors]
        parsed = await self._one_spelling(parsed, errors)
        site_of = await self.store.sites_of(e.participant_id for _, (e, _, _) in parsed)
        corrected = [str(e.supersedes) for _, (e, _, _) in parsed if e.supersedes is not None]
        owner_of = await self.store.owners_of(corrected)
        # a record imported before ids were scoped by site keeps its first id (the same content
        # under it is a duplicate, never a second event)
        earlier = (
            await self.store.accepted(self._import_ids(parsed, site_of))
            if (source in _IMPORTS)
            else {}
        )
        ok: list[tuple[int, Ready]] = []
        for i, (event, wire, digest) in parsed:
            refusal = authorize(event, who, site_of, owner_of)
            if refusal is not None:
                errors.append((i, refusal.error, refusal.status))
                continue
            if isinstance(event, ParticipantEnrolled):
                site_of.setdefault(event.participant_id, event.site_id)
            site = site_of.get(event.participant_id)
            if site is None:
                pass  # a screen failure, never enrolled: no site to scope its record's id by
            elif source in _IMPORTS and earlier.get(str(event.event_id)) != digest:
                legacy = scoped_to_site(event, site, None)
                legacy_wire, legacy_digest = encoded(legacy)
                if earlier.get(str(legacy.event_id)) == legacy_digest:
                    event, wire, digest = legacy, legacy_wire, legacy_digest  # imported then
                else:
                    event = scoped_to_site(event, site, self.store.id_secret)
                    wire, digest = encoded(event)
            owner_of.setdefault(str(event.event_id), event.participant_id)
            ok.append((i, (event, wire, digest)))
        return _Checked(ok, sorted(errors, key=lambda e: e[0]))

    @staticmethod
    def _import_ids(parsed: list[tuple[int, Ready]], site_of: dict[str, str]) -> list[str]:
        """The ids an imported record may already be accepted under: its own (imported before
        ids were scoped by site) and its site's unkeyed one (before they were keyed)."""
        sites = dict(site_of)
        for _, (e, _, _) in parsed:
            if isinstance(e, ParticipantEnrolled):
                sites.setdefault(e.participant_id, e.site_id)
        out = []
        for _, (e, _, _) in parsed:
            out.append(str(e.event_id))
            if (site := sites.get(e.participant_id)) is not None:
                out.append(str(scoped_to_site(e, site, None).event_id))
        return out

    async def _one_spelling(
        self, parsed: list[tuple[int, Ready]], errors: list[tuple[int, FieldError, int]]
    ) -> list[tuple[int, Ready]]:
        """Enrolments whose participant is another's spelling (dn-101 beside DN-101, in the
        registry or earlier in the request) become errors (422); the rest are returned."""
        enrolling = [(i, e) for i, (e, _, _) in parsed if isinstance(e, ParticipantEnrolled)]
        if not enrolling:
            return parsed
        held = await self.store.spellings({spelling_key(e.participant_id) for _, e in enrolling})
        wrong: set[int] = set()
        for i, e in enrolling:
            registered = held.setdefault(spelling_key(e.participant_id), e.participant_id)
            if registered != e.participant_id:
                errors.append((i, spelled_apart(e.participant_id, registered), 422))
                wrong.add(i)
        return [p for p in parsed if p[0] not in wrong] if wrong else parsed

    async def accept(self, bodies: Sequence[Any], who: Principal, source: str) -> list[Result]:
        """All or nothing: any error refuses the whole batch (Refused)."""
        checked = await self._check(bodies, who, source)
        if checked.errors:
            status = max(s for _, _, s in checked.errors)
            raise Refused(status, [(i, e) for i, e, _ in checked.errors])
        index = {f"index {i}": i for i, _ in checked.ok}
        results, conflicts = await self._write(
            [(f"index {i}", ready) for i, ready in checked.ok], whole=True
        )
        if conflicts:
            raise Refused(409, sorted((index[where], why) for where, why in conflicts))
        return results

    async def accept_each(
        self, items: Sequence[tuple[str, dict[str, Any]]], who: Principal, source: str
    ) -> tuple[list[Result], list[Rejection]]:
        """Record by record: bad ones become rejections; the good ones are accepted."""
        checked = await self._check([body for _, body in items], who, source)
        rejections = [Rejection(items[i][0], e.field, e.reason) for i, e, _ in checked.errors]
        good = [(items[i][0], ready) for i, ready in checked.ok]
        results, conflicts = await self._write(good, whole=False)
        rejections += [Rejection(where, why.field, why.reason) for where, why in conflicts]
        return results, rejections

    async def _write(
        self, events: list[tuple[str, Ready]], *, whole: bool
    ) -> tuple[list[Result], list[tuple[str, FieldError]]]:
        """Reserves each new event_id in the database, then appends to Kafka, then records.

        One writer per event_id, however many requests race: a reservation held by another
        request for the same content is waited for (then it is a duplicate); for other content
        it is a conflict, returned with its `where` (and with `whole`, nothing is written)."""
        results: dict[str, Result] = {}
        conflicts: list[tuple[str, FieldError]] = []
        first: dict[str, tuple[str, ClinicalEvent, str]] = {}  # event_id -> (where, event, hash)
        wire_of: dict[str, bytes] = {}
        for where, (event, wire, digest) in events:
            eid = str(event.event_id)
            if eid not in first:
                first[eid], wire_of[eid] = (where, event, digest), wire
            elif first[eid][2] == digest:
                results[where] = Result(where, event, eid, Outcome.DUPLICATE)
            else:
                conflicts.append((where, _CONFLICT))
        claimed = await self._register(first, conflicts)
        owner = uuid.uuid4().hex  # this request
        unknown: dict[str, Unknown] = {}
        mine = await self._reserve(first, results, conflicts, owner, unknown)
        refused = {where for where, _ in conflicts}
        held_for_others = [eid for eid in mine if first[eid][0] in refused]
        if held_for_others:  # another content's unknown write holds these ids
            await self.store.release(held_for_others, owner)
            mine = [eid for eid in mine if eid not in held_for_others]
        if whole and conflicts:
            await self.store.release(mine, owner)
            await self.store.unclaim(set(claimed.values()))
            return [], conflicts
        produced: list[Result] = []
        sending: list[str] = []
        failure: Exception | None = None
        sent_at = self.clock()
        try:
            # an earlier write of the same content whose outcome is unknown: found on the
            # topic, or sent again as it was first stamped (never stamped anew)
            # (a writer that died mid-write left no bytes: not found, this request's are sent)
            for eid, u in unknown.items():
                where, event = first[eid][0], first[eid][1]
                if u.wire:
                    event = cast(ClinicalEvent, decode(u.wire))
                position = await self.log.find(event, u.sent_at)
                if position is not None:
                    produced.append(Result(where, event, eid, Outcome.ACCEPTED, position))
                elif u.wire:
                    first[eid], wire_of[eid] = (where, event, u.content_sha256), u.wire
            found = {r.event_id for r in produced}
            sending = [eid for eid in mine if eid not in found]
            writing = [first[eid] for eid in sending]
            sent_at = self.clock()
            positions, failure = await self.log.append_many(
                [(e, wire_of[eid]) for eid, (_, e, _) in zip(sending, writing, strict=True)]
            )
            produced += [
                Result(where, event, eid, Outcome.ACCEPTED, position)
                for eid, (where, event, _), position in zip(
                    sending, writing, positions, strict=True
                )
                if position is not None
            ]
        finally:
            done = {r.event_id for r in produced}
            maybe = set()
            if isinstance(failure, LogUnavailable) and failure.maybe_written:
                # handed over, never acknowledged: kept (before the reservations go) with the
                # exact bytes sent, so a retry is answered from them and other content is not
                # taken under their ids
                maybe = {eid for eid in sending if eid not in done}
                await self.store.mark_unknown(
                    [Unknown(eid, first[eid][2], wire_of[eid], sent_at) for eid in maybe]
                )
            # an enrolment not written (and not perhaps written) claims nobody
            await self.store.unclaim(
                {p for eid, p in claimed.items() if eid not in done and eid not in maybe}
            )
            await self._record(
                produced, owner, {eid: digest for eid, (_, _, digest) in first.items()}
            )
            await self.store.release([eid for eid in mine if eid not in done], owner)
            await self.store.settled([eid for eid in unknown if eid in done])
        if failure is not None:
            raise failure
        results.update((r.where, r) for r in produced)
        return [results[where] for where, _ in events if where in results], conflicts

    async def reconcile(self) -> int:
        """Settles the unknown writes that landed (read from the topic, recorded as accepted, so
        a retry is a duplicate); the rest wait for their client's retry, which sends them as
        first stamped. Returns how many are still unknown. LogUnavailable while Kafka is."""
        pending = await self.store.unknown()
        found: list[Result] = []
        for eid, u in pending.items():
            event = cast(ClinicalEvent, decode(u.wire))
            position = await self.log.find(event, u.sent_at)
            if position is not None:
                found.append(Result("reconciled", event, eid, Outcome.ACCEPTED, position))
        if found:
            await self._record(
                found, uuid.uuid4().hex, {e: u.content_sha256 for e, u in pending.items()}
            )
            await self.store.settled([r.event_id for r in found])
        return len(pending) - len(found)

    async def _reserve(
        self,
        first: dict[str, tuple[str, ClinicalEvent, str]],
        results: dict[str, Result],
        conflicts: list[tuple[str, FieldError]],
        owner: str,
        unknown: dict[str, Unknown],
    ) -> list[str]:
        """The event ids this request now holds, in order; fills in duplicates and conflicts,
        and `unknown` with the earlier writes of the same content whose outcome is unknown
        (this request settles them). An id held to settle another content's unknown write is
        held and a conflict (the caller releases it)."""
        mine: list[str] = []
        waiting = dict(first)
        deadline = time.monotonic() + self.in_flight_s
        while waiting:
            now = self.clock().astimezone(UTC)
            held = await self.store.reserve(
                {eid: digest for eid, (_, _, digest) in waiting.items()},
                owner,
                stale_before=now - timedelta(seconds=self.in_flight_s),
            )
            in_flight: dict[str, tuple[str, ClinicalEvent, str]] = {}
            for eid, entry in waiting.items():
                where, event, digest = entry
                holder = held.get(eid)
                if holder is None:
                    mine.append(eid)
                elif holder.unknown is not None:  # reserved for us, to settle an unknown write
                    mine.append(eid)
                    if holder.content_sha256 == digest:
                        unknown[eid] = holder.unknown
                    else:
                        conflicts.append((where, _CONFLICT))
                elif holder.content_sha256 != digest:
                    conflicts.append((where, _CONFLICT))
                elif holder.accepted:
                    results[where] = Result(where, event, eid, Outcome.DUPLICATE)
                else:
                    in_flight[eid] = entry  # another request is writing it: wait for its outcome
            waiting = in_flight
            if waiting:
                if time.monotonic() > deadline:
                    await self.store.release(mine, owner)
                    raise LogUnavailable(STILL_WRITING, STILL_WRITING)
                await asyncio.sleep(0.05)
        order = {eid: n for n, eid in enumerate(first)}
        return sorted(mine, key=order.__getitem__)

    async def _register(
        self,
        first: dict[str, tuple[str, ClinicalEvent, str]],
        conflicts: list[tuple[str, FieldError]],
    ) -> dict[str, str]:
        """Fixes the site of each participant enrolled here before anything is written; an
        enrolment that lost the race to another site's is a conflict. Returns the claims this
        made first, enrolment event_id -> participant (dropped if that enrolment is not
        written: a refused request claims nobody)."""
        enrolments = {
            eid: e for eid, (_, e, _) in first.items() if isinstance(e, ParticipantEnrolled)
        }
        sites, new = await self.store.claim_sites(
            [(e.participant_id, e.site_id) for e in enrolments.values()]
        )
        for eid, e in enrolments.items():
            if sites.get(e.participant_id) != e.site_id:
                conflicts.append((first.pop(eid)[0], ENROLLED_ELSEWHERE))
        return {eid: e.participant_id for eid, e in enrolments.items() if e.participant_id in new}

    async def _record(self, results: list[Result], owner: str, digests: dict[str, str]) -> None:
        rows = [
            Accepted(
                r.event_id,
                digests[r.event_id],
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
        await self.store.record(rows, enrolled, owner)
