"""The topic catalog: names, keys, partitions and retention. Brokers are created from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from contracts.alerts import AlertRaised
from contracts.events import AnyEvent, ClinicalEvent, LifecycleEvent

DEFAULT_PARTITIONS = 12
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000
TRIAL_KEY = "trial"  # key of trial-level alerts, which have no participant


@dataclass(frozen=True)
class Topic:
    name: str
    holds: str
    key: str
    event_types: tuple[str, ...]
    partitions: int = DEFAULT_PARTITIONS
    config: dict[str, str] = field(default_factory=dict)


TRIAL_EVENTS = Topic(
    name="trial.events",
    holds="every participant-level clinical fact: enrolment, dose, visit, lab, AE, "
    "disposition and corrections",
    key="participant_id",
    # the contract's one list of clinical events (contracts.events.ClinicalEvent)
    event_types=tuple(c.model_fields["event_type"].default for c in get_args(ClinicalEvent)),
    # The system of record: kept forever, never compacted.
    config={"retention.ms": "-1", "cleanup.policy": "delete"},
)
SAFETY_ALERTS = Topic(
    name="safety.alerts",
    holds="alert.raised",
    key="participant_id (`trial` for trial-level alerts)",
    event_types=(AlertRaised.model_fields["event_type"].default,),
    config={"retention.ms": "-1", "cleanup.policy": "delete"},
)
ALERT_LIFECYCLE = Topic(
    name="safety.alert-lifecycle",
    holds="delivered, delivery_failed, acknowledged, escalated, resolved, withdrawn",
    key="alert_id",
    event_types=tuple(c.model_fields["event_type"].default for c in get_args(LifecycleEvent)),
    config={"retention.ms": "-1", "cleanup.policy": "delete"},
)
DEAD_LETTER = Topic(
    name="trial.dead-letter",
    holds="what could not be decoded or validated, with the reason and the original bytes",
    key="as received",
    event_types=(),
    config={"retention.ms": str(THIRTY_DAYS_MS), "cleanup.policy": "delete"},
)

AUDIT_CHECKPOINTS = Topic(
    name="audit.checkpoints",
    holds="each signed checkpoint of the audit chain (seq, head hash, key id, signature): the "
    "anchor outside the database that `audit verify` compares the database with",
    key="the signing key's id",
    event_types=(),
    partitions=1,
    config={"retention.ms": "-1", "cleanup.policy": "delete"},
)

CATALOG: tuple[Topic, ...] = (
    TRIAL_EVENTS,
    SAFETY_ALERTS,
    ALERT_LIFECYCLE,
    DEAD_LETTER,
    AUDIT_CHECKPOINTS,
)
_BY_EVENT_TYPE = {t: topic for topic in CATALOG for t in topic.event_types}


def topic_named(name: str) -> Topic | None:
    """The catalog's entry for a topic name (None for a topic outside the catalog)."""
    return next((t for t in CATALOG if t.name == name), None)


def topic_for(event: AnyEvent) -> Topic:
    return _BY_EVENT_TYPE[event.event_type]


def key_for(event: AnyEvent) -> bytes:
    """The partition key: one participant's facts stay in order; lifecycle by alert."""
    if event.event_type in ALERT_LIFECYCLE.event_types:
        return str(event.alert_id).encode()  # type: ignore[union-attr]
    return (event.participant_id or TRIAL_KEY).encode()
