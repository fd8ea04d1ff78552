"""Every event type as one discriminated union, and the codec between events and bytes.

Two ways into the typed world, each taking bytes, str or a dict and either returning an event or
raising `InvalidEvent`, whose `errors` name each field and the reason:
- `parse_event` *accepts* a fact (ingest, hand-written files): every bound, and with `window` the
  instants it may name;
- `decode` reads a fact already recorded on a topic (every consumer, a replay): shape and types
  only, so a bound tightened later never turns a recorded fact into a dead letter.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeAlias, get_args

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from contracts.alerts import (
    AlertAcknowledged,
    AlertDelivered,
    AlertDeliveryFailed,
    AlertEscalated,
    AlertRaised,
    AlertResolved,
    AlertWithdrawn,
)
from contracts.clinical import (
    AeReported,
    AeUpdated,
    DoseAdministered,
    LabResulted,
    ParticipantDisposition,
    ParticipantEnrolled,
    VisitCompleted,
)
from contracts.common import REPLAY, WINDOW

ClinicalEvent: TypeAlias = (
    ParticipantEnrolled
    | DoseAdministered
    | VisitCompleted
    | LabResulted
    | AeReported
    | AeUpdated
    | ParticipantDisposition
)
LifecycleEvent: TypeAlias = (
    AlertDelivered
    | AlertDeliveryFailed
    | AlertAcknowledged
    | AlertEscalated
    | AlertResolved
    | AlertWithdrawn
)
AnyEvent: TypeAlias = ClinicalEvent | AlertRaised | LifecycleEvent

EVENT_CLASSES: tuple[type[AnyEvent], ...] = (
    *get_args(ClinicalEvent),
    AlertRaised,
    *get_args(LifecycleEvent),
)
EVENT_TYPES: dict[str, type[AnyEvent]] = {
    cls.model_fields["event_type"].default: cls for cls in EVENT_CLASSES
}

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(
    Annotated[AnyEvent, Field(discriminator="event_type")]
)


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class InvalidEvent(ValueError):
    """An event that does not satisfy the contract; `errors` name each field and reason."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"field": e.field, "reason": e.reason} for e in self.errors]


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        # The union tag is the first element of loc; drop it so the field reads as sent.
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = ".".join(loc)
        if not field and ": " in msg:
            # Model-level validators name their field as "field: reason".
            field, msg = msg.split(": ", 1)
        if err["type"] == "missing":
            msg = "is required"
        out.append(FieldError(field or "(event)", msg))
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(raw: bytes | str) -> Any:
    """JSON as the contract reads it: NaN and Infinity (which Python's json takes) refused."""
    return json.loads(raw, parse_constant=_no_constant)


def parse_event(
    raw: bytes | str | dict[str, Any], *, window: tuple[datetime, datetime] | None = None
) -> AnyEvent:
    """The event in `raw`, accepted: validated against every bound (units normalised; with
    `window`, each instant within it), or InvalidEvent naming what is wrong."""
    return _validate(raw, {WINDOW: window} if window else None)


def _validate(raw: bytes | str | dict[str, Any], context: dict[str, Any] | None) -> AnyEvent:
    data: Any = raw
    if isinstance(raw, bytes | str):
        try:
            data = loads(raw)
        except (ValueError, RecursionError) as e:  # also NaN, huge integers, deep nesting
            raise InvalidEvent([FieldError("(body)", f"not valid JSON: {e}")]) from None
    if not isinstance(data, dict):
        raise InvalidEvent([FieldError("(body)", "an event must be a JSON object")])
    event_type = data.get("event_type")
    if event_type is None:
        raise InvalidEvent([FieldError("event_type", "is required")])
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        what = (
            f"unknown event type {event_type!r}"
            if isinstance(event_type, str | int | float)
            else "not a string"
        )
        raise InvalidEvent([FieldError("event_type", f"{what} (known: {known})")])
    try:
        return _ADAPTER.validate_python(data, context=context)
    except ValidationError as e:
        raise InvalidEvent(_field_errors(e)) from None


def encode(event: AnyEvent) -> bytes:
    """Canonical JSON bytes of an event: what goes on the wire and into the audit hash."""
    return canonical_json(event.model_dump(mode="json"))


# json.dumps with these arguments builds this encoder at every call; the bytes are the same
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: `json.dumps(data, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False).encode()`, what every audit hash was computed over.

    Written by orjson (a fifth of json's time) when `_orjson_writes_it_alike(data)`; json
    writes the rest, and any value orjson refuses (an integer past 64 bits, a lone
    surrogate)."""
    if _orjson_writes_it_alike(data):
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return _CANONICAL.encode(data).encode()


def _orjson_writes_it_alike(value: Any) -> bool:
    """Whether orjson writes `value` byte for byte as json does: plain str, int, bool, None,
    list and dict, and floats of 1e-4 and up in size, or zero. Not: smaller floats (json
    writes 1e-05 where orjson writes 0.00001 or 1e-5), NaN and the infinities (orjson writes
    null), anything else (a tuple, an enum, a subclass). A key that is not a str, orjson
    refuses (and json writes the rest)."""
    kind = type(value)
    if kind is dict:
        values: Any = value.values()
    elif kind is list:
        values = value
    else:
        values = (value,)
    for v in values:  # the common kinds first: this runs for every event written
        kind = type(v)
        if kind is str or v is None or kind is int or kind is bool:
            continue
        if kind is float:
            if not (v == 0.0 or _ALIKE_FROM <= abs(v) < math.inf):
                return False
        elif kind is dict or kind is list:
            if not _orjson_writes_it_alike(v):
                return False
        else:
            return False
    return True


_ALIKE_FROM = 1e-4  # and up, floats are written alike (tested to the last exponent)


def decode(raw: bytes | str | dict[str, Any]) -> AnyEvent:
    """A recorded event: shape and types checked, acceptance bounds not (see the module doc)."""
    return _validate(raw, {REPLAY: True})
