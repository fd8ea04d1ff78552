"""FHIR R4 to events (pure): the example Bundle, and the real HL7/Synthea shapes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from contracts import parse_event
from services.ingest.domain.fhir import FhirContext, map_bundle, map_resource
from services.ingest.domain.mapping import Mapped, RowError

DATA = Path(__file__).resolve().parents[2] / "data" / "fhir"
CTX = FhirContext(trial_id="UCMSC-DN-01", site_id="sardjito", zone=UTC)
SERVER = {"recorded_at": "2026-11-01T00:00:00Z", "recorded_by": "test", "source": "fhir"}


def example() -> Mapped:
    return map_bundle(json.loads((DATA / "transaction-dn-201.json").read_text()), CTX)


def by_entry(m: Mapped) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for where, event in m.events:
        out.setdefault(where.split(" (")[0], []).append(event)
    return out


def test_a_research_subject_enrols_its_patient() -> None:
    (enrolment,) = by_entry(example())["entry 1"]
    assert (enrolment["participant_id"], enrolment["sex"], enrolment["birth_date"]) == (
        "DN-201",
        "F",
        "1969-05-17",
    )
    assert enrolment["enrolled_at"] == "2026-01-05T09:00:00+07:00"


def test_every_analyte_maps_with_its_loinc_and_unit() -> None:
    e = by_entry(example())
    got = {(x["analyte"], x["loinc"], x["unit"]) for n in range(2, 10) for x in e[f"entry {n}"]}
    assert {
        ("creatinine", "2160-0", "mg/dL"),
        ("creatinine", "38483-4", "umol/L"),
        ("egfr", "98979-8", "mL/min/{1.73_m2}"),
        ("uacr", "14959-1", "mg/g"),
        ("uacr", "9318-7", "mg/mmol{creat}"),
        ("tnf_alpha", "3074-2", "pg/mL"),
        ("il_10", "26848-2", "pg/mL"),
    } <= got
    for events in e.values():
        for body in events:
            parse_event({**body, **SERVER})  # every mapped event satisfies the contract


def test_components_comparators_periods_and_issued_are_read() -> None:
    m = example()
    e = by_entry(m)
    old = e["entry 9"]
    assert [(x["loinc"], x.get("comparator"), x["value"]) for x in old] == [
        ("48643-1", ">", 60),
        ("48642-3", None, 57),
    ]
    assert e["entry 8"][0]["comparator"] == "<"
    assert e["entry 3"][0]["occurred_at"] == "2026-02-08T08:10:00+07:00"
    assert ("entry 4 (Observation/egfr-1)", "no effective[x]: dated by issued") in {
        (n.row, n.note) for n in m.notes
    }
    assert e["entry 5"][0]["participant_id"] == "DN-201"  # Patient/ID as well as urn:uuid


def test_an_adverse_event_maps_grade_seriousness_causality_and_outcome() -> None:
    e = by_entry(example())
    (ae,) = e["entry 13"]
    assert (
        ae["ae_id"],
        ae["ctcae_grade"],
        ae["serious"],
        ae["seriousness_criteria"],
        ae["relatedness"],
        ae["outcome"],
    ) == ("AE-1", 3, True, ["hospitalization"], "probable", "recovering")
    (mild,) = e["entry 14"]
    assert (mild["ctcae_grade"], mild["serious"], mild["relatedness"], mild["outcome"]) == (
        1,
        False,
        "unlikely",
        "recovered",
    )


def test_every_entry_not_mapped_is_reported_with_its_reason() -> None:
    reasons = {r.row: f"{r.field}: {r.reason}" for r in example().rejections}
    assert "718-7" in reasons["entry 10 (Observation/hb-1)"]
    assert "no date" in reasons["entry 11 (Observation/creat-nodate)"]
    assert "not a Patient in this Bundle" in reasons["entry 12 (Observation/creat-other)"]
    assert "Encounter is not mapped" in reasons["entry 15 (Encounter/enc-1)"]
    m = example()
    mapped_entries = (
        {w for w, _ in m.events} | {r.row for r in m.rejections} | {n.row for n in m.notes}
    )
    assert len(mapped_entries) == 16  # every entry is accounted for


@pytest.mark.parametrize("kind", ["searchset", "document", None])
def test_only_transaction_batch_and_collection_bundles_are_taken(kind: str | None) -> None:
    with pytest.raises(RowError, match=r"Bundle\.type"):
        map_bundle({"resourceType": "Bundle", "type": kind, "entry": []}, CTX)


@pytest.mark.external
def test_the_hl7_examples_map_or_say_why(shared_data: Path) -> None:
    fhir = shared_data / "fhir"
    ae = map_resource(
        json.loads((fhir / "hl7-r4-examples_AdverseEvent-example.json").read_text()), CTX
    )
    # no causality assessed: accepted and marked not_assessed, never rejected (DESIGN)
    assert ae.rejections == []
    ((_, rash),) = ae.events
    assert (rash["relatedness"], rash["serious"]) == ("not_assessed", False)
    assert "no suspectEntity.causality assessment: relatedness not_assessed" in {
        n.note for n in ae.notes
    }
    creat = map_resource(
        json.loads((fhir / "hl7-r4-examples_Observation-f204-creatinine.json").read_text()), CTX
    )
    assert "no LOINC code" in creat.rejections[0].reason  # only a local code
    egfr = map_resource(
        json.loads((fhir / "hl7-r4-examples_Observation-f205-egfr.json").read_text()), CTX
    )
    assert [(e["loinc"], e.get("comparator")) for _, e in egfr.events] == [
        ("48643-1", ">"),
        ("48642-3", None),
    ]
    ghp = map_bundle(json.loads((fhir / "hl7-r4-examples_Bundle-ghp.json").read_text()), CTX)
    assert len(ghp.events) + len(ghp.rejections) == 55
    (o8,) = [e for _, e in ghp.events]
    assert (o8["loinc"], o8["unit"]) == ("14682-9", "mmol/L")  # the contract will refuse mmol/L
    print(Counter(r.reason for r in ghp.rejections).most_common(5))


@pytest.mark.external
@pytest.mark.parametrize(
    ("name", "labs"),
    [
        ("synthea-r4_Renato_Dare_transaction.json", 15),
        ("synthea-r4_Jordan_Cruickshank_transaction.json", 10),
    ],
)
def test_synthea_bundles_give_their_kidney_labs(shared_data: Path, name: str, labs: int) -> None:
    bundle = json.loads((shared_data / "fhir" / name).read_text())
    m = map_bundle(bundle, CTX)
    assert len(m.events) == labs
    assert len(m.events) + len(m.rejections) + len(m.notes) >= len(bundle["entry"])
    assert len({w for w, _ in m.events} | {r.row for r in m.rejections}) == len(bundle["entry"])
    for _, body in m.events:
        parse_event({**body, **SERVER})


OPENEHR = "http://hl7.org/fhir/StructureDefinition/openEHR-location"
KIDNEY = {"coding": [{"system": "http://snomed.info/sct", "code": "18639004",
                      "display": "Left kidney structure"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("extension", "location", "locality", "note"),
    [
        ({"url": OPENEHR, "valueCodeableConcept": KIDNEY}, None, "local", None),
        ({"url": OPENEHR, "valueCodeableConcept": {"text": "left forearm"}}, None, "systemic",
         None),
        ({"url": "http://hl7.org/fhir/StructureDefinition/bodySite",
          "valueReference": {"display": "Right flank, puncture site"}}, None, "local", None),
        ({"url": "https://sponsor.example/fhir/StructureDefinition/ae-locality",
          "valueCode": "systemic"}, None, "systemic", None),
        (None, {"display": "Left kidney, lower pole"}, "local", None),
        (None, {"display": "Radiology ward 3"}, None,
         "location 'Radiology ward 3' is a place, not the injected kidney: locality unknown"),
        (None, None, None, None),
    ],
)  # fmt: skip
def test_locality_comes_from_a_body_site_extension_or_the_location(
    extension: dict[str, Any] | None,
    location: dict[str, Any] | None,
    locality: str | None,
    note: str | None,
) -> None:
    bundle = json.loads((DATA / "transaction-dn-201.json").read_text())
    ae = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "ae-201-2")
    if extension:
        ae["extension"] = [extension]
    if location:
        ae["location"] = location
    m = map_bundle(bundle, CTX)
    (mapped,) = [e for where, e in m.events if "ae-201-2" in where]
    assert mapped.get("local_or_systemic") == locality
    notes = {n.note for n in m.notes if "ae-201-2" in n.row}
    assert (note in notes) if note else not any("locality" in n for n in notes)
    event = parse_event({**mapped, **SERVER})
    assert (event.local_or_systemic.value if event.local_or_systemic else None) == locality  # type: ignore[union-attr]


def _subject(status: str, period: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "DN-301",
                                                     "gender": "male", "birthDate": "1960-01-02"}},
            {"resource": {"resourceType": "ResearchSubject", "id": "rs1", "status": status,
                          "individual": {"reference": "urn:uuid:p1"}, "period": period}},
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "period", "kinds", "disposition"),
    [
        ("on-study", {"start": "2026-01-05"}, ["participant.enrolled"], None),
        ("withdrawn", {"start": "2026-01-05", "end": "2026-04-01"},
         ["participant.enrolled", "participant.disposition"], "withdrew_consent"),
        ("off-study", {"start": "2026-01-05", "end": "2027-01-06"},
         ["participant.enrolled", "participant.disposition"], "completed"),
        ("ineligible", {"start": "2025-12-20"}, ["participant.disposition"], "screen_failure"),
    ],
)  # fmt: skip
def test_a_research_subjects_status_gives_its_disposition(
    status: str, period: dict[str, str], kinds: list[str], disposition: str | None
) -> None:
    m = map_bundle(_subject(status, period), CTX)
    got = [e for _, e in m.events]
    assert [e["event_type"] for e in got] == kinds
    if disposition is not None:
        left = got[-1]
        assert (left["disposition"], left["source_term"]) == (disposition, status)
        assert left["disposition_date"] == period.get("end", period["start"])
    for e in got:
        parse_event({**e, **SERVER})


def test_a_research_subject_that_left_without_an_end_date_is_refused_naming_period_end() -> None:
    m = map_bundle(_subject("withdrawn", {"start": "2026-01-05"}), CTX)
    assert [(r.field, r.reason) for r in m.rejections] == [
        ("period.end", "is missing: the day a subject withdrawn left the study")
    ]


def test_an_adverse_events_meddra_coding_is_carried_at_its_lowest_level() -> None:
    ae = json.loads((DATA / "transaction-dn-201.json").read_text())
    resource = next(
        e["resource"] for e in ae["entry"] if e["resource"]["resourceType"] == "AdverseEvent"
    )
    resource = {**resource, "subject": {"reference": "Patient/DN-201"}, "event": {"coding": [
        {"system": "http://snomed.info/sct", "code": "274743003", "display": "Flank pain"},
        {"system": "http://terminology.hl7.org/CodeSystem/mdr", "code": "10016750",
         "display": "Flank pain", "version": "26.0"},
    ]}}  # fmt: skip
    m = map_resource(resource, CTX)
    (event,) = [e for _, e in m.events]
    assert event["meddra"] == {"llt": "Flank pain", "llt_code": "10016750", "version": "26.0"}
