"""Deterministic sample events: one of every type, and a small demo trial.

Ids are uuid5 of a readable name, so the same sample is byte-identical on every run and a replay
of it is a replay (same event_ids), not new data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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
    MeddraCoding,
    ParticipantDisposition,
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
        meddra=MeddraCoding(
            version="26.0",
            llt="Flank pain",
            llt_code="10016750",
            pt="Flank pain",
            pt_code="10016750",
            soc="Musculoskeletal and connective tissue disorders",
            soc_code="10028395",
        ),
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
        ParticipantDisposition(
            **env("disposition", 366), disposition="completed", disposition_date=date(2027, 1, 6)
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
                meddra=_coded("Perirenal haematoma", "Renal and urinary disorders"),
                onset_date=_day(dose_at, 12),
                ctcae_grade=3,
                serious=True,
                seriousness_criteria=["hospitalization"],
                relatedness="probable",
                expectedness="unexpected",
                local_or_systemic="local",
                outcome="recovering",
            )


@dataclass(frozen=True)
class Chapter:
    """A moment of the demo's story: what happens, what the monitor should raise, the events."""

    title: str
    watch: str
    events: list[AnyEvent]


STORY_VISITS = (("M1", 30), ("M3", 91), ("M6", 182), ("M9", 273), ("M12", 365))


def _coded(pt: str, soc: str) -> MeddraCoding:
    """A site's MedDRA coding of the story's AE: names only (the project ships no dictionary
    and invents no code)."""
    return MeddraCoding(llt=pt, pt=pt, soc=soc)


def story(participants: int = 10) -> list[Chapter]:
    """The trial's course for the demo: 10 participants through baseline, the injection and
    M1-M12 (dated a year back, so every visit window has closed), each chapter a step of the
    protocol, and a story in which every safety rule fires at least once:

    DN-001 misses M9 (visit.overdue); DN-002 has a severe non-serious AE and a lab-reported eGFR
    that disagrees with its creatinine (ae.severe, lab.egfr_mismatch); DN-003's UACR doubles at
    M6 (uacr.rise); DN-004's creatinine nearly doubles at M1 (creatinine.aki, egfr.decline);
    DN-005 bleeds around the kidney, related and unexpected (sae.reported, susar.clock); DN-006's
    TNF-alpha rises at M1 (inflammation.rise); DN-007 is over-dosed (dose.deviation); DN-008's
    kidney function declines steadily (egfr.rapid_slope, then egfr.decline); DN-009 has the
    second related severe SAE (trial.stopping_rule); DN-010 is injected twice and reaches kidney
    failure by M9 (dose.repeat, egfr.kidney_failure). DN-003's M3 UACR comes again from the lab's
    feed with another value (lab.discrepancy), DN-005's M1 creatinine with the same one (nothing);
    DN-006 withdraws consent after M6 and DN-007 dies after M9 (sae.reported): neither is owed a
    visit after. Ids are fixed: a rerun is all duplicates."""
    site = "site:sardjito"
    first = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)
    people = [f"DN-{n:03d}" for n in range(1, participants + 1)]
    dose_at = {p: first + timedelta(days=3 * i) for i, p in enumerate(people)}
    weight = {p: 60.0 + 1.5 * i for i, p in enumerate(people)}
    creat0 = {p: round(1.3 + 0.04 * i, 2) for i, p in enumerate(people)}

    def env(pid: str, name: str, at: datetime) -> dict[str, Any]:
        return _envelope(f"story/{pid}/{name}", pid, at, site)

    def lab(
        pid: str, name: str, at: datetime, analyte: str, value: float, unit: str, visit: str | None
    ) -> LabResulted:  # fmt: skip
        return LabResulted(
            **env(pid, name, at), analyte=analyte, value=value, unit=unit, visit=visit
        )

    def ae(pid: str, at: datetime, **fields: Any) -> AeReported:
        """Each participant's one AE of the story (AE-1)."""
        return AeReported(**env(pid, "ae-1", at), ae_id="AE-1", **fields)

    enrol: list[AnyEvent] = []
    for i, p in enumerate(people):
        at = dose_at[p] - timedelta(days=14)
        enrol.append(
            ParticipantEnrolled(
                **env(p, "enrolled", at),
                sex="F" if i % 2 else "M",
                age_years=48 + i,
                weight_kg=weight[p],
                site_id="sardjito",
                enrolled_at=at,
            )
        )
        at = dose_at[p] - timedelta(days=7)
        enrol.append(VisitCompleted(**env(p, "visit-baseline", at), visit="baseline"))
        enrol += [
            lab(p, "baseline-creatinine", at, "creatinine", creat0[p], "mg/dL", "baseline"),
            lab(p, "baseline-uacr", at, "uacr", 180.0 + 10 * i, "mg/g", "baseline"),
            lab(p, "baseline-tnf", at, "tnf_alpha", 12.0, "pg/mL", "baseline"),
            lab(p, "baseline-il10", at, "il_10", 6.0, "pg/mL", "baseline"),
        ]
    chapters = [Chapter("Screening and baseline", "nothing yet: baselines only", enrol)]

    doses: list[AnyEvent] = []
    for p in people:
        per_kg = 1.25 if p == "DN-007" else 1.0
        doses.append(
            DoseAdministered(
                **env(p, "dose", dose_at[p]),
                cells_total=weight[p] * 1e6 * per_kg,
                weight_kg=weight[p],
                lot=f"L-{p}",
            )
        )
    again = dose_at["DN-010"] + timedelta(days=2)
    doses.append(
        DoseAdministered(
            **env("DN-010", "dose-again", again),
            cells_total=weight["DN-010"] * 1e6,
            weight_kg=weight["DN-010"],
            lot="L-DN-010-b",
        )
    )
    bleed = dose_at["DN-005"] + timedelta(days=2)
    doses.append(
        ae(
            "DN-005",
            bleed,
            term="Perirenal haematoma",
            meddra=_coded("Perirenal haematoma", "Renal and urinary disorders"),
            onset_date=_day(dose_at["DN-005"], 2),
            ctcae_grade=3,
            serious=True,
            seriousness_criteria=["hospitalization"],
            relatedness="probable",
            expectedness="unexpected",
            local_or_systemic="local",
            outcome="recovering",
        )
    )
    chapters.append(
        Chapter(
            "The injection",
            "DN-007 over-dosed (dose.deviation); DN-010 injected twice (dose.repeat); DN-005 "
            "bleeds around the kidney (sae.reported, susar.clock)",
            doses,
        )
    )

    def creatinine(p: str, visit: str) -> float:
        base = creat0[p]
        if p == "DN-004" and visit == "M1":
            return round(base * 1.9, 2)
        if p == "DN-008":
            rise = {"M1": 1.05, "M3": 1.12, "M6": 1.22, "M9": 1.32, "M12": 1.42}
            return round(base * rise[visit], 2)
        if p == "DN-010":
            failing = {"M1": 1.1, "M3": 1.3, "M6": 1.6, "M9": 2.2, "M12": 4.6}
            return round(base * failing[visit], 2)
        return round(base * 1.01, 2)

    watching = {
        "M1": "DN-004's creatinine nearly doubles (creatinine.aki, egfr.decline); DN-006's "
        "TNF-alpha rises (inflammation.rise); DN-002 has a severe AE, not serious (ae.severe)",
        "M3": "DN-002's lab reports an eGFR its creatinine does not give (lab.egfr_mismatch); "
        "DN-008's and DN-010's eGFR fall faster than 5 a year (egfr.rapid_slope); the lab's "
        "feed sends DN-003's UACR sample again with another value (lab.discrepancy)",
        "M6": "DN-003's UACR doubles (uacr.rise); DN-009 is admitted with a related severe SAE, "
        "the second participant (sae.reported, trial.stopping_rule); DN-010's creatinine "
        "climbs (creatinine.aki, egfr.decline); DN-006 withdraws consent (no visit owed after)",
        "M9": "DN-001 does not come (visit.overdue: the worker's clock raises it once the story is "
        "told); DN-010 reaches the kidney failure range (egfr.kidney_failure); DN-007 dies of a "
        "myocardial infarction, not related (sae.reported; no M12 owed)",
        "M12": "DN-008 ends a third below baseline (egfr.decline); DN-010 at KDIGO stage 3",
    }
    gone = {("DN-006", 273), ("DN-006", 365), ("DN-007", 365)}  # withdrawn; died
    for visit, day in STORY_VISITS:
        events: list[AnyEvent] = []
        for i, p in enumerate(people):
            if (p == "DN-001" and visit == "M9") or (p, day) in gone:
                continue
            at = dose_at[p] + timedelta(days=day)
            events.append(VisitCompleted(**env(p, f"visit-{visit}", at), visit=visit))
            value = creatinine(p, visit)
            events.append(lab(p, f"{visit}-creatinine", at, "creatinine", value, "mg/dL", visit))
            uacr = (180.0 + 10 * i) * (2.4 if (p == "DN-003" and visit == "M6") else 1.02)
            events.append(lab(p, f"{visit}-uacr", at, "uacr", round(uacr, 1), "mg/g", visit))
            tnf = 31.0 if (p == "DN-006" and visit == "M1") else 12.5
            events.append(lab(p, f"{visit}-tnf", at, "tnf_alpha", tnf, "pg/mL", visit))
            events.append(lab(p, f"{visit}-il10", at, "il_10", 6.5, "pg/mL", visit))
            if p == "DN-003" and visit == "M3":
                # a report that says neither local nor systemic, causality still open: the DSMB
                # report counts it as "not recorded" and "not assessed"
                events.append(
                    ae(
                        p,
                        at,
                        term="Fatigue",
                        onset_date=_day(at, -3),
                        ctcae_grade=1,
                        serious=False,
                        relatedness="not_assessed",
                        outcome="recovering",
                    )
                )
            if p == "DN-002" and visit == "M3":
                events.append(lab(p, "M3-egfr", at, "egfr", 95.0, "mL/min/1.73m2", visit))
            if p == "DN-003" and visit == "M3":  # the same sample from the lab's feed, differing
                events.append(
                    lab(p, "M3-uacr-feed", at, "uacr", round(uacr + 14, 1), "mg/g", visit)
                )
            if p == "DN-005" and visit == "M1":  # the same sample again, the same value
                events.append(lab(p, "M1-creat-feed", at, "creatinine", value, "mg/dL", visit))
            if p == "DN-006" and visit == "M6":
                left = at + timedelta(days=8)
                events.append(
                    ParticipantDisposition(
                        **env(p, "withdrew", left),
                        disposition="withdrew_consent",
                        disposition_date=left.date(),
                    )
                )
            if p == "DN-007" and visit == "M9":
                died = at + timedelta(days=27)
                events.append(
                    ae(
                        p,
                        died,
                        term="Myocardial infarction",
                        meddra=_coded("Myocardial infarction", "Cardiac disorders"),
                        onset_date=_day(died, 0),
                        end_date=_day(died, 0),
                        ctcae_grade=5,
                        serious=True,
                        seriousness_criteria=["death"],
                        relatedness="not_related",
                        expectedness="expected",
                        local_or_systemic="systemic",
                        outcome="fatal",
                    )
                )
                events.append(
                    ParticipantDisposition(
                        **env(p, "died", died), disposition="died", disposition_date=died.date()
                    )
                )
            if p == "DN-002" and visit == "M1":
                events.append(
                    ae(
                        p,
                        at,
                        term="Hyperkalaemia",
                        meddra=_coded("Hyperkalaemia", "Metabolism and nutrition disorders"),
                        onset_date=_day(at, 0),
                        ctcae_grade=3,
                        serious=False,
                        relatedness="unlikely",
                        expectedness="expected",
                        local_or_systemic="systemic",
                        outcome="recovered",
                    )
                )
            if p == "DN-009" and visit == "M6":
                events.append(
                    ae(
                        p,
                        at,
                        term="Acute pyelonephritis",
                        meddra=_coded("Pyelonephritis acute", "Infections and infestations"),
                        onset_date=_day(at, -2),
                        ctcae_grade=3,
                        serious=True,
                        seriousness_criteria=["hospitalization"],
                        relatedness="possible",
                        expectedness="expected",
                        local_or_systemic="local",
                        outcome="recovered",
                    )
                )
        chapters.append(Chapter(f"{visit} (day {day})", watching[visit], events))
    return chapters
