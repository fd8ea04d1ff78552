"""Who may write what: a participant's site is fixed at the first enrolment, a site key learns
nothing about other sites' participants or events, and corrections stay within a participant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from contracts import LabResulted, ParticipantEnrolled, Sex, Source, parse_event
from services.ingest.domain.policy import Principal, Role, authorize, scoped_to_site

A = Principal("ka", Role.SITE, "A")
B = Principal("kb", Role.SITE, "B")
ADMIN = Principal("k0", Role.ADMIN, None)
AT = datetime(2026, 1, 5, tzinfo=UTC)
SITES = {"DN-A1": "A", "DN-B1": "B"}


def envelope(pid: str, **kw: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "trial_id": "T", "participant_id": pid, "occurred_at": AT,
            "recorded_at": AT, "recorded_by": "x", "source": Source.API, **kw}  # fmt: skip


def lab(pid: str, **kw: Any) -> LabResulted:
    return LabResulted(**envelope(pid, **kw), analyte="creatinine", value=1.0, unit="mg/dL")


def enrol(pid: str, site: str) -> ParticipantEnrolled:
    return ParticipantEnrolled(
        **envelope(pid), sex=Sex.MALE, age_years=50, site_id=site, enrolled_at=AT
    )


def test_a_site_gets_one_answer_for_another_sites_participant_and_an_unknown_one() -> None:
    foreign, unknown = authorize(lab("DN-B1"), A, SITES, {}), authorize(lab("DN-X9"), A, SITES, {})
    assert foreign == unknown and foreign is not None and foreign.status == 403
    assert authorize(lab("DN-A1"), A, SITES, {}) is None
    admin = authorize(lab("DN-X9"), ADMIN, SITES, {})
    assert admin is not None and (admin.status, admin.error.field) == (422, "participant_id")


def test_the_site_of_a_participant_is_fixed_at_the_first_enrolment() -> None:
    for who in (A, ADMIN):
        refusal = authorize(enrol("DN-B1", "A"), who, SITES, {})
        assert refusal is not None and (refusal.status, refusal.error.field) == (
            409,
            "participant_id",
        )
    assert authorize(enrol("DN-B1", "B"), B, SITES, {}) is None  # the same site again is fine
    wrong = authorize(enrol("DN-N1", "B"), A, SITES, {})
    assert wrong is not None and (wrong.status, wrong.error.field) == (403, "site_id")


def test_a_correction_reaches_only_its_own_sites_events_of_the_same_participant() -> None:
    theirs, mine, other_pid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    owners = {str(theirs): "DN-B1", str(mine): "DN-A1", str(other_pid): "DN-A2"}
    sites = {**SITES, "DN-A2": "A"}

    def correcting(target: uuid.UUID) -> Any:
        return authorize(lab("DN-A1", supersedes=target, reason="typo"), A, sites, owners)

    assert correcting(mine) is None
    assert correcting(theirs) == correcting(uuid.uuid4())  # another site's = unknown
    assert correcting(theirs).status == 403 and correcting(theirs).error.field == "supersedes"
    assert correcting(other_pid).status == 422  # another participant of the same site


def test_import_ids_are_scoped_by_site_keyed_and_stable() -> None:
    event, key = lab("DN-A1"), b"k" * 32
    a1, a2 = scoped_to_site(event, "A", key), scoped_to_site(event, "A", key)
    b = scoped_to_site(event, "B", key)
    assert a1.event_id == a2.event_id != b.event_id != event.event_id
    assert a1.model_dump(exclude={"event_id"}) == event.model_dump(exclude={"event_id"})
    # what another site could compute from the source (the unkeyed id) is not the id, and
    # another service's key gives another
    assert a1.event_id != scoped_to_site(event, "A", None).event_id
    assert a1.event_id != scoped_to_site(event, "A", b"x" * 32).event_id
    assert a1.event_id.version == 8


def screened_out(pid: str) -> Any:
    return parse_event({
        "event_type": "participant.disposition", "event_id": str(uuid.uuid4()),
        "trial_id": "UCMSC-DN-01", "participant_id": pid, "occurred_at": "2026-01-02T00:00:00Z",
        "recorded_at": "2026-01-02T00:00:00Z", "recorded_by": "x", "source": "sdtm",
        "disposition": "screen_failure", "disposition_date": "2026-01-02",
    })  # fmt: skip


def test_a_screen_failure_never_enrolled_is_recorded_by_an_admin_and_refused_to_a_site() -> None:
    assert authorize(screened_out("DN-X9"), ADMIN, SITES, {}) is None
    refusal = authorize(screened_out("DN-X9"), A, SITES, {})
    assert refusal is not None and refusal.status == 403
    assert refusal.error.field == "participant_id" and "admin key" in refusal.error.reason
    # any other fact of someone never enrolled is refused, as before
    assert authorize(lab("DN-X9"), ADMIN, SITES, {}) is not None
