"""Who may write what, and what makes an accepted event: decided without any I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from contracts import ClinicalEvent, FieldError
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
    """The identity of an event's content: what a duplicate must repeat exactly."""
    data = event.model_dump(mode="json", exclude=set(SERVER_FIELDS))
    return hashlib.sha256(canonical_json(data)).hexdigest()


def stamp(raw: dict[str, Any], principal: Principal, source: str, now_iso: str) -> dict[str, Any]:
    """The body with the server's fields: recorded_by from the key, never from the body."""
    return {**raw, "recorded_by": principal.recorded_by, "recorded_at": now_iso, "source": source}


def authorize(
    event: ClinicalEvent, principal: Principal, site_of: dict[str, str]
) -> FieldError | None:
    """Why this principal may not write this event (None: it may). `site_of` maps known and
    newly enrolled participants to their site."""
    if event.event_type == "participant.enrolled":
        if principal.role is Role.SITE and event.site_id != principal.site_id:
            return FieldError(
                "site_id", f"a key of site {principal.site_id} cannot enrol at {event.site_id}"
            )
        return None
    site = site_of.get(event.participant_id)
    if site is None:
        return FieldError(
            "participant_id", "unknown participant: enrol them (participant.enrolled) first"
        )
    if principal.role is Role.SITE and site != principal.site_id:
        return FieldError(
            "participant_id",
            f"belongs to another site; a key of site {principal.site_id} cannot write it",
        )
    return None


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
