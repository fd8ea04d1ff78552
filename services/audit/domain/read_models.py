"""What an event changes in the read models, as data: (table, key, values, how). Pure.

The store applies these in the same transaction as the audit row, and `audit rebuild` applies
the same ones from a replay, so live and rebuilt read models are the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import singledispatch
from typing import Any, Literal

from clinical.age import clinical_date
from clinical.terms import is_related
from contracts import (
    AeReported,
    AeUpdated,
    AlertAcknowledged,
    AlertDelivered,
    AlertDeliveryFailed,
    AlertEscalated,
    AlertRaised,
    AlertResolved,
    AlertWithdrawn,
    AnyEvent,
    DoseAdministered,
    LabResulted,
    ParticipantDisposition,
    ParticipantEnrolled,
    VisitCompleted,
)


@dataclass(frozen=True)
class Change:
    table: str
    key: dict[str, Any]
    values: dict[str, Any]
    # upsert: insert or overwrite; merge: insert with defaults or update only these columns;
    # increment: add 1 to the named counter columns (values) of an existing row;
    # earliest: like merge, but only when the row has no `earliest` column value yet or a later one
    how: Literal["upsert", "merge", "increment", "earliest"] = "upsert"
    defaults: dict[str, Any] | None = None
    earliest: str | None = None


@singledispatch
def changes(event: AnyEvent) -> list[Change]:
    """Events with no read model of their own (none today) change nothing."""
    return []


@changes.register
def _(e: ParticipantEnrolled) -> list[Change]:
    return [
        Change(
            "rm_participants",
            {"participant_id": e.participant_id},
            {
                "trial_id": e.trial_id,
                "site_id": e.site_id,
                "sex": e.sex.value,
                "birth_date": e.birth_date.isoformat() if e.birth_date else None,
                "age_years": e.age_years,
                "enrolled_at": e.enrolled_at,
                "enrolled_on": clinical_date(e.enrolled_at).isoformat(),
            },
            how="merge",
            defaults={
                "dose_at": None,
                "dose_on": None,
                "cells_per_kg": None,
                "weight_kg": e.weight_kg,
            },
        )
    ]


@changes.register
def _(e: DoseAdministered) -> list[Change]:
    return [
        Change(
            "rm_participants",
            {"participant_id": e.participant_id},
            {
                "dose_at": e.occurred_at,
                "dose_on": clinical_date(e.occurred_at).isoformat(),  # study day 0, at the site
                "cells_per_kg": e.cells_per_kg,
                "weight_kg": e.weight_kg,
            },
            # the protocol's one injection: a second dose never moves the anchor (dose.repeat)
            how="earliest",
            earliest="dose_at",
            defaults={
                "trial_id": e.trial_id,
                "site_id": None,
                "sex": None,
                "birth_date": None,
                "age_years": None,
                "enrolled_at": None,
                "enrolled_on": None,
            },
        )
    ]


@changes.register
def _(e: VisitCompleted) -> list[Change]:
    return [
        Change(
            "rm_visits",
            {"participant_id": e.participant_id, "visit": e.visit.value},
            {"occurred_at": e.occurred_at},
        )
    ]


@changes.register
def _(e: LabResulted) -> list[Change]:
    out = [
        Change(
            "rm_labs",
            {"event_id": str(e.event_id)},
            {
                "participant_id": e.participant_id,
                "analyte": e.analyte.value,
                "value": e.value,
                "unit": e.unit,
                "comparator": e.comparator.value if e.comparator else None,
                "visit": e.visit.value if e.visit else None,
                "loinc": e.loinc,
                "occurred_at": e.occurred_at,
                "sample_date": clinical_date(e.occurred_at).isoformat(),
            },
            how="merge",
            defaults={"superseded_by": None},
        )
    ]
    if e.supersedes is not None:
        # the corrected value stays in the log; the read model marks it superseded
        out.append(
            Change(
                "rm_labs",
                {"event_id": str(e.supersedes)},
                {"superseded_by": str(e.event_id)},
                how="merge",
                defaults=_placeholder_lab(e),
            )
        )
    return out


def _placeholder_lab(e: LabResulted) -> dict[str, Any]:
    """A correction seen before what it corrects (another partition): a row to merge into."""
    return {
        "participant_id": e.participant_id,
        "analyte": e.analyte.value,
        "value": e.value,
        "unit": e.unit,
        "comparator": None,
        "visit": None,
        "loinc": None,
        "occurred_at": e.occurred_at,
        "sample_date": clinical_date(e.occurred_at).isoformat(),
    }


def _ae(e: AeReported | AeUpdated) -> list[Change]:
    values = {
        "event_id": str(e.event_id),
        "term": e.term,
        "onset_date": e.onset_date,
        "end_date": e.end_date,
        "grade": e.ctcae_grade,
        "serious": e.serious,
        "criteria": json.dumps([c.value for c in e.seriousness_criteria]),
        "relatedness": e.relatedness.value,
        "related": is_related(e.relatedness),
        "expectedness": e.expectedness.value if e.expectedness else None,
        "locality": e.local_or_systemic.value if e.local_or_systemic else None,
        "outcome": e.outcome.value,
        "source": e.source.value,
        "aware_at": e.aware_at,
        "recorded_at": e.recorded_at,
        "meddra": e.meddra.model_dump_json(exclude_none=True) if e.meddra else None,
    }
    key = {"participant_id": e.participant_id, "ae_id": e.ae_id}
    return [
        Change("rm_aes", key, values, how="merge", defaults={"versions": 0}),
        Change("rm_aes", key, {"versions": 1}, how="increment"),
    ]


changes.register(AeReported, _ae)
changes.register(AeUpdated, _ae)


@changes.register
def _(e: ParticipantDisposition) -> list[Change]:
    out = [
        Change(
            "rm_dispositions",
            {"event_id": str(e.event_id)},
            {
                "participant_id": e.participant_id,
                "trial_id": e.trial_id,
                "disposition": e.disposition.value,
                "disposition_date": e.disposition_date.isoformat(),
                "withdrawal_reason": e.withdrawal_reason.value if e.withdrawal_reason else None,
                "source_term": e.source_term,
            },
            how="merge",
            defaults={"superseded_by": None},
        )
    ]
    if e.supersedes is not None:  # the corrected disposition no longer counts
        out.append(
            Change(
                "rm_dispositions",
                {"event_id": str(e.supersedes)},
                {"superseded_by": str(e.event_id)},
                how="merge",
                defaults={
                    "participant_id": e.participant_id,
                    "trial_id": e.trial_id,
                    "disposition": e.disposition.value,
                    "disposition_date": e.disposition_date.isoformat(),
                    "withdrawal_reason": None,
                    "source_term": None,
                },
            )
        )
    return out


_ALERT_DEFAULTS: dict[str, Any] = {
    "rule_id": None,
    "rule_version": None,
    "severity": None,
    "participant_id": None,
    "trial_id": None,
    "title": None,
    "raised_at": None,
    "recorded_at": None,
    "due_by": None,
    "facts": None,
    "status": "raised",
    "delivered_at": None,
    "acknowledged_at": None,
    "acknowledged_by": None,
    "escalations": 0,
    "resolved_at": None,
    "channels": None,
}
_RANK = {
    "raised": 0,
    "delivery_failed": 1,
    "delivered": 2,
    "escalated": 3,
    "acknowledged": 4,
    "resolved": 5,
    # a correction removed the alert's evidence: the alert stays in the register, marked so
    "withdrawn": 6,
}


def alert_status(current: str, new: str) -> str:
    """Lifecycle events can arrive out of order (two topics): status only moves forward."""
    return new if _RANK[new] >= _RANK[current] else current


@changes.register
def _(e: AlertRaised) -> list[Change]:
    return [
        Change(
            "rm_alerts",
            {"alert_id": str(e.alert_id)},
            {
                "rule_id": e.rule_id,
                "rule_version": e.rule_version,
                "severity": e.severity.value,
                "participant_id": e.participant_id,
                "trial_id": e.trial_id,
                "title": e.title,
                "raised_at": e.occurred_at,
                "recorded_at": e.recorded_at,
                "due_by": e.due_by,
                "facts": json.dumps(e.facts, sort_keys=True),
            },
            how="merge",
            defaults=_ALERT_DEFAULTS,
        )
    ]


def _lifecycle(e: Any, status: str, values: dict[str, Any]) -> list[Change]:
    return [
        Change(
            "rm_alerts",
            {"alert_id": str(e.alert_id)},
            {"status": status, **values},
            how="merge",
            defaults=_ALERT_DEFAULTS,
        )
    ]


@changes.register
def _(e: AlertDelivered) -> list[Change]:
    return _lifecycle(
        e, "delivered", {"delivered_at": e.occurred_at, "channels": {e.channel.value: "delivered"}}
    )


@changes.register
def _(e: AlertDeliveryFailed) -> list[Change]:
    return _lifecycle(e, "delivery_failed", {"channels": {e.channel.value: "failed"}})


def channel_outcomes(current: str | None, new: dict[str, str]) -> str:
    """The register's `channels` column after `new` outcomes: each channel's latest."""
    merged = {**(json.loads(current) if current else {}), **new}
    return json.dumps(merged, sort_keys=True)


def failed_channels(channels: str | None) -> list[str]:
    """The channels whose latest attempt failed (never 'delivered' while one owed fails)."""
    return sorted(c for c, outcome in (json.loads(channels) if channels else {}).items()
                  if outcome == "failed")  # fmt: skip


@changes.register
def _(e: AlertEscalated) -> list[Change]:
    return [
        *_lifecycle(e, "escalated", {}),
        Change("rm_alerts", {"alert_id": str(e.alert_id)}, {"escalations": 1}, how="increment"),
    ]


@changes.register
def _(e: AlertAcknowledged) -> list[Change]:
    return _lifecycle(
        e, "acknowledged", {"acknowledged_at": e.occurred_at, "acknowledged_by": e.acknowledged_by}
    )


@changes.register
def _(e: AlertResolved) -> list[Change]:
    return _lifecycle(e, "resolved", {"resolved_at": e.occurred_at})


@changes.register
def _(e: AlertWithdrawn) -> list[Change]:
    return _lifecycle(e, "withdrawn", {})
