"""Deterministic sample events: one of every type, and a small demo trial.

Ids are uuid5 of a readable name, so the same sample is byte-identical on every run and a replay
of it is a replay (same event_ids), not new data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

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
    ParticipantEnrolled,
    VisitCompleted,
    alert_id_for,
)

TRIAL_ID = "UCMSC-DN-01"
_NS = uuid.UUID("0b7d8a52-3c0e-4e0f-8f0c-6d3a3b8f9e21")


def sample_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NS, name)


def _envelope(
    name: str, participant: str | None, at: datetime, by: str, source: str = "demo"
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "event_id": sample_id(name),
        "trial_id": TRIAL_ID,
        "occurred_at": at,
        "recorded_at": at + timedelta(hours=2),
        "recorded_by": by,
        "source": source,
    }
    if participant is not None:
        env["participant_id"] = participant
    return env


def one_of_each(participant: str = "DN-001") -> list[AnyEvent]:
    """One event of every type in the contract, for round-trip tests."""
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    site = "site:sardjito"

    def env(name: str, days: float) -> dict[str, Any]:
        return _envelope(f"{participant}/{name}", participant, t0 + timedelta(days=days), site)

    alert_id = alert_id_for("sae.reported", participant, "demo")
    notifier = "service:notifier"

    def life(name: str, days: float) -> dict[str, Any]:
        return {
            **_envelope(
                f"{participant}/{name}",
                participant,
                t0 + timedelta(days=days),
                notifier,
                "notifier",
            ),
            "alert_id": alert_id,
        }

    ae = dict(
        ae_id="AE-1",
        term="Flank pain",
        onset_date="2026-01-06",
        ctcae_grade=3,
        serious=True,
        seriousness_criteria=["hospitalization"],
        relatedness="possible",
        expectedness="unexpected",
        local_or_systemic="local",
        outcome="recovering",
    )
    return [
        ParticipantEnrolled(
            **env("enrolled", 0),
            sex="F",
            birth_date=date(1971, 4, 2),
            weight_kg=68.0,
            site_id="sardjito",
            enrolled_at=t0,
        ),
        DoseAdministered(**env("dose", 1), cells_total=68_000_000, weight_kg=68.0, lot="L-0001"),
        VisitCompleted(**env("visit-baseline", 0), visit="baseline"),
        LabResulted(
            **env("creat-baseline", 0),
            visit="baseline",
            analyte="creatinine",
            value=1.4,
            unit="mg/dL",
            loinc="2160-0",
        ),
        AeReported(**env("ae-1", 2), **ae),
        AeUpdated(
            **env("ae-1-update", 9), **{**ae, "outcome": "recovered", "end_date": "2026-01-14"}
        ),
        AlertRaised(
            **_envelope(
                f"{participant}/alert",
                participant,
                t0 + timedelta(days=2),
                "service:safety_rules",
                "safety_rules",
            ),
            alert_id=alert_id,
            rule_id="sae.reported",
            rule_version=1,
            severity="critical",
            title="Serious AE reported: Flank pain",
            evidence=[sample_id(f"{participant}/ae-1")],
            due_by=t0 + timedelta(days=3),
            thresholds={"due_hours": 24},
            facts={"ctcae_grade": 3},
        ),
        AlertDelivered(**life("delivered", 2.01), channel="email", recipient="safety-officer"),
        AlertDeliveryFailed(
            **life("delivery-failed", 2.01),
            channel="webhook",
            recipient="sponsor-webhook",
            attempt=1,
            error="HTTP 503",
        ),
        AlertEscalated(**life("escalated", 2.1), level=1, escalated_to="medical-monitor"),
        AlertAcknowledged(
            **life("acked", 2.2), acknowledged_by="safety-officer", note="called site"
        ),
        AlertResolved(
            **life("resolved", 3),
            resolved_by="safety-officer",
            resolution="Reported to sponsor within 24 h",
        ),
        AlertWithdrawn(
            # another alert: this one was raised on a value that a correction later replaced
            **{**life("withdrawn", 4), "alert_id": alert_id_for("egfr.decline", participant, "x")},
            rule_id="egfr.decline",
            withdrawn_by=sample_id(f"{participant}/ae-1-correction"),
            superseded=sample_id(f"{participant}/ae-1"),
            reason="its evidence was corrected: AE entered for the wrong participant",
        ),
    ]


def _day(start: datetime, days: int) -> str:
    return (start + timedelta(days=days)).date().isoformat()


def demo_trial(participants: int = 10) -> Iterator[AnyEvent]:
    """A small trial: enrolment, dose, baseline and monthly labs, a few AEs (one serious)."""
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    site = "site:sardjito"
    for n in range(1, participants + 1):
        pid = f"DN-{n:03d}"
        start = t0 + timedelta(days=7 * n)
        sex = "F" if n % 2 else "M"
        weight = 60.0 + n * 1.5
        creat0 = 1.3 + 0.05 * n

        def env(name: str, at: datetime, pid: str = pid) -> dict[str, Any]:
            return _envelope(f"{pid}/{name}", pid, at, site)

        yield ParticipantEnrolled(
            **env("enrolled", start),
            sex=sex,
            age_years=45 + n,
            weight_kg=weight,
            site_id="sardjito",
            enrolled_at=start,
        )
        yield VisitCompleted(**env("visit-baseline", start), visit="baseline")
        baseline_labs = (
            ("creatinine", creat0, "mg/dL"),
            ("uacr", 420.0 + 10 * n, "mg/g"),
            ("tnf_alpha", 12.0, "pg/mL"),
            ("il_10", 6.0, "pg/mL"),
        )
        for analyte, value, unit in baseline_labs:
            yield LabResulted(
                **env(f"baseline-{analyte}", start),
                visit="baseline",
                analyte=analyte,
                value=value,
                unit=unit,
            )
        dose_at = start + timedelta(days=3)
        cells = weight * 1_000_000 * (1.25 if n == 7 else 1.0)  # DN-007 is over-dosed
        yield DoseAdministered(
            **env("dose", dose_at), cells_total=cells, weight_kg=weight, lot=f"L-{n:04d}"
        )
        for visit, day in (("M1", 30), ("M3", 91)):
            at = dose_at + timedelta(days=day)
            yield VisitCompleted(**env(f"visit-{visit}", at), visit=visit)
            factor = 1.9 if (n == 4 and visit == "M1") else (1.01 if visit == "M1" else 0.99)
            # DN-004's creatinine nearly doubles at M1 (acute kidney injury), sent in umol/L
            yield LabResulted(
                **env(f"{visit}-creatinine", at),
                visit=visit,
                analyte="creatinine",
                value=round(creat0 * factor * 88.4, 1),
                unit="umol/L",
            )
        if n == 2:
            yield AeReported(
                **env("ae-1", dose_at + timedelta(days=1)),
                ae_id="AE-1",
                term="Injection site pain",
                onset_date=_day(dose_at, 1),
                ctcae_grade=1,
                serious=False,
                relatedness="definite",
                expectedness="expected",
                local_or_systemic="local",
                outcome="recovered",
            )
        if n == 5:
            yield AeReported(
                **env("ae-1", dose_at + timedelta(days=12)),
                ae_id="AE-1",
                term="Perirenal haematoma",
                onset_date=_day(dose_at, 12),
                ctcae_grade=3,
                serious=True,
                seriousness_criteria=["hospitalization"],
                relatedness="probable",
                expectedness="unexpected",
                local_or_systemic="local",
                outcome="recovering",
            )
