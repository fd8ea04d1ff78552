"""POST /fhir/Bundle on the real broker: per-entry outcome, resend adds nothing, real files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ingest.conftest import Api

DATA = Path(__file__).resolve().parents[2] / "data" / "fhir"
FHIR_JSON = {"content-type": "application/fhir+json"}


async def post(api: Api, bundle: Any, key: str | None = None, **params: str) -> dict[str, Any]:
    r = await api.client.post(
        "/fhir/Bundle",
        content=json.dumps(bundle),
        params=params,
        headers=api.h(key or api.site_a, **FHIR_JSON),
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_the_example_bundle_is_accepted_entry_by_entry_and_a_resend_adds_nothing(
    api: Api,
) -> None:
    bundle = json.loads((DATA / "transaction-dn-201.json").read_text())
    first = await post(api, bundle)
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (12, 0, 4)
    assert {r["entry"].split(" (")[1].rstrip(")") for r in first["rejections"]} == {
        "Observation/hb-1",
        "Observation/creat-nodate",
        "Observation/creat-other",
        "Encounter/enc-1",
    }
    again = await post(api, bundle)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 12, 4)


async def test_a_site_key_cannot_enrol_at_another_site(api: Api) -> None:
    bundle = json.loads((DATA / "transaction-dn-201.json").read_text())
    r = await api.client.post(
        "/fhir/Bundle",
        content=json.dumps(bundle),
        params={"site_id": "x"},
        headers=api.h(api.site_a, **FHIR_JSON),
    )
    assert r.status_code == 403


async def test_a_bundle_of_another_type_is_refused_with_the_field(api: Api) -> None:
    r = await api.client.post(
        "/fhir/Bundle",
        json={"resourceType": "Bundle", "type": "searchset"},
        headers=api.h(api.site_a),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "type"


def enrolment(patient: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": "participant.enrolled",
        "event_id": str(uuid.uuid4()),
        "trial_id": "UCMSC-DN-01",
        "participant_id": patient["id"],
        "occurred_at": "2020-01-01T00:00:00Z",
        "enrolled_at": "2020-01-01T00:00:00Z",
        "sex": {"male": "M", "female": "F"}[patient["gender"]],
        "birth_date": patient["birthDate"],
        "site_id": "sardjito",
    }


@pytest.mark.external
@pytest.mark.parametrize(
    ("name", "labs"),
    [
        ("synthea-r4_Renato_Dare_transaction.json", 15),
        ("synthea-r4_Jordan_Cruickshank_transaction.json", 10),
    ],
)
async def test_synthea_bundles_after_enrolment_give_their_kidney_labs(
    api: Api, shared_data: Path, name: str, labs: int
) -> None:
    bundle = json.loads((shared_data / "fhir" / name).read_text())
    before = await post(api, bundle)  # not enrolled yet: every lab is refused, with the reason
    assert before["accepted"] == 0
    assert sum("enrol them" in r["reason"] for r in before["rejections"]) == labs
    (patient,) = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    r = await api.client.post("/v1/events", json=enrolment(patient), headers=api.h(api.site_a))
    assert r.status_code == 201, r.text
    after = await post(api, bundle)
    assert after["accepted"] == labs
    assert after["accepted"] + after["rejected"] == len(bundle["entry"])  # nothing unaccounted


@pytest.mark.external
async def test_the_hl7_examples_are_answered_entry_by_entry(api: Api, shared_data: Path) -> None:
    fhir = shared_data / "fhir"
    ghp = await post(api, json.loads((fhir / "hl7-r4-examples_Bundle-ghp.json").read_text()))
    assert ghp["accepted"] == 0 and ghp["rejected"] == 55
    (o8,) = [r for r in ghp["rejections"] if "Observation/o8" in r["entry"]]
    assert "unknown participant" in o8["reason"] or "'mmol/L'" in o8["reason"]
    for single in (
        "hl7-r4-examples_AdverseEvent-example.json",
        "hl7-r4-examples_Observation-f204-creatinine.json",
        "hl7-r4-examples_Observation-f205-egfr.json",
    ):
        resource = json.loads((fhir / single).read_text())
        out = await post(
            api, {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
        )
        assert out["accepted"] == 0 and out["rejected"] >= 1
        assert all(r["reason"] for r in out["rejections"])


async def test_a_bundle_past_the_entry_cap_is_a_413_naming_the_cap(
    kafka: str, tmp_path: Path
) -> None:
    """A Bundle of 60k entries grew the process to 440 MB; past the cap it is refused before
    it is mapped (and a Bundle is parsed and mapped off the event loop)."""
    from tests.integration.ingest.conftest import make_api

    api = await make_api(kafka, tmp_path / "ingest.db", ingest_max_bundle_entries=1000)
    try:
        entry = {"resource": {"resourceType": "Encounter", "id": "e"}}
        big = {"resourceType": "Bundle", "type": "collection", "entry": [entry] * 1001}
        r = await api.client.post("/fhir/Bundle", content=json.dumps(big),
                                  headers=api.h(api.site_a, **FHIR_JSON))  # fmt: skip
        assert r.status_code == 413, r.text
        assert "1001 entries; at most 1000" in r.json()["errors"][0]["reason"]
        big["entry"] = [entry] * 1000
        r = await api.client.post("/fhir/Bundle", content=json.dumps(big),
                                  headers=api.h(api.site_a, **FHIR_JSON))  # fmt: skip
        assert r.status_code == 200 and r.json()["rejected"] == 1000
    finally:
        await api.client.aclose()
        await api.parts.log.close()
        await api.parts.store.close()
