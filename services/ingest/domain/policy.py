"""Who may write what, and what makes an accepted event: decided without any I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from contracts import ClinicalEvent, Disposition, FieldError, ParticipantDisposition
from contracts.events import canonical_json

# Fields the server sets: never taken from the body, and not part of an event's identity.
SERVER_FIELDS = ("recorded_at", "recorded_by", "source")


class Role(StrEnum):
    SITE = "site"  # writes its own site's participants
    ADMIN = "admin"  # writes any site's participants


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: Role
    site_id: str | None

    @property
    def recorded_by(self) -> str:
        return (
            f"site:{self.site_id}/key:{self.key_id}" if self.site_id else f"admin/key:{self.key_id}"
        )


def content_hash(event: ClinicalEvent) -> str:
    """The identity of an event's content, what a duplicate must repeat exactly: the SHA-256
    of its canonical JSON without the fields the server stamps."""
    return encoded(event)[1]


def encoded(event: ClinicalEvent) -> tuple[bytes, str]:
    """`contracts.encode(event)` (the bytes for the log) and `content_hash(event)`, from one
    dump of the event (dumps were a tenth of a batch's time, and one was made for each)."""
    data = event.model_dump(mode="json")
    content = dict(data)  # a copy less the server's fields: a fifth of a comprehension's time
    for name in SERVER_FIELDS:
        content.pop(name, None)
    return canonical_json(data), hashlib.sha256(canonical_json(content)).hexdigest()


def stamp(raw: dict[str, Any], principal: Principal, source: str, now_iso: str) -> dict[str, Any]:
    """The body with the server's fields: recorded_by from the key, never from the body."""
    return {**raw, "recorded_by": principal.recorded_by, "recorded_at": now_iso, "source": source}


@dataclass(frozen=True)
class Acceptance:
    """What this service accepts beyond the contract: its trials, and the instants an event
    may name (a time outside them cannot be a clinical fact of this trial)."""

    trial_ids: frozenset[str]
    earliest: date = date(1900, 1, 1)
    ahead: timedelta = timedelta(days=1)
    max_event_bytes: int = 64 * 2**10
    participant_patterns: Mapping[str, str] = field(default_factory=dict)

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        return datetime.combine(self.earliest, time(), UTC), now + self.ahead

    def participant(self, trial_id: str, participant_id: str) -> FieldError | None:
        """Why a participant id is refused for this trial: not in the form its pattern
        gives (`participant_patterns`, trial -> a regular expression; e.g. DN-101)."""
        pattern = self.participant_patterns.get(trial_id)
        if pattern is None or re.fullmatch(pattern, participant_id):
            return None
        return FieldError(
            "participant_id",
            f"is not in this trial's form {pattern!r} (e.g. DN-101): one participant, one spelling",
        )

    def trial(self, trial_id: str) -> FieldError | None:
        """Why a trial id is refused here (None: it is accepted)."""
        if trial_id in self.trial_ids:
            return None
        known = ", ".join(sorted(self.trial_ids))
        return FieldError("trial_id", f"{trial_id!r} is not a trial of this service ({known})")


def spelling_key(participant_id: str) -> str:
    """What tells two spellings of one participant apart from two participants: case, the
    separators - _ . and spaces, and compatibility forms (NFKC) do not count (dn-101, DN_101
    and DN-101. are DN-101)."""
    folded = unicodedata.normalize("NFKC", participant_id).casefold()
    return _SEPARATORS.sub("-", folded).strip("-")


_SEPARATORS = re.compile(r"[-_.\s]+")


def spelled_apart(participant_id: str, registered: str) -> FieldError:
    return FieldError(
        "participant_id",
        f"{participant_id} is {registered} written differently: one participant, one "
        f"spelling; use {registered}",
    )


ENROLLED_ELSEWHERE = FieldError(
    "participant_id",
    "already enrolled at another site; a participant's site is fixed at the first enrolment",
)


@dataclass(frozen=True)
class Refusal:
    error: FieldError
    status: int


def _not_yours(principal: Principal) -> Refusal:
    # The same answer whether the participant is unknown or another site's: a site learns
    # nothing about who else is enrolled.
    return Refusal(
        FieldError(
            "participant_id",
            f"no participant of site {principal.site_id} has this id; enrol them "
            "(participant.enrolled) at your site first",
        ),
        403,
    )


def screened_out(event: ClinicalEvent) -> bool:
    """A screen failure's disposition: the one fact of a participant who was never enrolled."""
    return isinstance(event, ParticipantDisposition) and (
        event.disposition is Disposition.SCREEN_FAILURE
    )


def authorize(
    event: ClinicalEvent,
    principal: Principal,
    site_of: dict[str, str],
    owner_of: dict[str, str],
) -> Refusal | None:
    """Why this principal may not write this event (None: it may).

    `site_of` maps known and newly enrolled participants to their site (fixed at the first
    enrolment); `owner_of` maps accepted event ids to their participant (for `supersedes`)."""
    site = site_of.get(event.participant_id)
    is_site = principal.role is Role.SITE
    if event.event_type == "participant.enrolled":
        if is_site and event.site_id != principal.site_id:
            return Refusal(
                FieldError(
                    "site_id", f"a key of site {principal.site_id} cannot enrol at {event.site_id}"
                ),
                403,
            )
        if site is not None and site != event.site_id:
            return Refusal(ENROLLED_ELSEWHERE, 409)
    elif site is None and screened_out(event):
        # a screen failure was never enrolled, so no site holds the id: an admin or import key
        # records it (a site key would claim an id no enrolment fixed to it)
        if is_site:
            return Refusal(
                FieldError(
                    "participant_id",
                    "a screen failure of someone never enrolled is recorded with an admin key "
                    "(or the sponsor's SDTM DS import); a site key writes only its enrolled "
                    "participants",
                ),
                403,
            )
    elif site is None:
        if is_site:
            return _not_yours(principal)
        return Refusal(
            FieldError(
                "participant_id", "unknown participant: enrol them (participant.enrolled) first"
            ),
            422,
        )
    elif is_site and site != principal.site_id:
        return _not_yours(principal)
    if event.supersedes is not None:
        owner = owner_of.get(str(event.supersedes))
        if owner is None or (is_site and site_of.get(owner) != principal.site_id):
            who = f"of site {principal.site_id} " if is_site else ""
            return Refusal(
                FieldError("supersedes", f"no accepted event {who}has this id"),
                403 if is_site else 422,
            )
        if owner != event.participant_id:
            return Refusal(
                FieldError("supersedes", "corrects an event of another participant"), 422
            )
    return None


# Imported records get ids derived from the record (the same file twice is the same events);
# scoped by the participant's site, so no other site can claim them first.
SITE_NAMESPACE = uuid.UUID("9b2f3c6e-2a41-4d0b-8f57-1c9e4a7d3b20")


def scoped_to_site(event: ClinicalEvent, site_id: str, secret: bytes | None) -> ClinicalEvent:
    """An imported record's event under its site's id: an HMAC-SHA256 of the site and the
    record's id keyed with the service's own secret (`secret`), so that no other site can
    compute the id and take it first (nor learn from a 409 which records exist). With
    `secret` None, the id records were given before ids were keyed (a uuid5 anyone could
    compute): a record imported then keeps it."""
    name = f"{site_id}|{event.event_id}"
    if secret is None:
        scoped = uuid.uuid5(SITE_NAMESPACE, name)
    else:
        digest = hmac.new(secret, name.encode(), hashlib.sha256).digest()
        value = int.from_bytes(digest[:16], "big") & ~_VERSION_VARIANT | _VERSION_8
        scoped = uuid.UUID(int=value)
    return event.model_copy(update={"event_id": scoped})


# RFC 9562's version 8 (custom) and variant bits: an id from a keyed hash, not a uuid5
_VERSION_VARIANT = (0xF000 << 64) | (0xC000 << 48)
_VERSION_8 = (8 << 76) | (0x8000 << 48)


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
