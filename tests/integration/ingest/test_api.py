"""POST /v1/events against the real broker: durable 2xx, duplicates, 503, bad input, auth."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from contracts import decode
from deploy.kafka.launcher import KafkaLauncher
from services.logs import JsonFormatter
from tests.conftest import free_port, launcher_in
from tests.integration.contracts.test_kafka_roundtrip import consume_from
from tests.integration.ingest.conftest import Api, make_api
from tests.integration.safety_rules.test_worker import unique


def enrolment(pid: str, site: str = "sardjito", **kw: Any) -> dict[str, Any]:
    return {
        "event_type": "participant.enrolled",
        "event_id": str(uuid.uuid4()),
        "trial_id": "UCMSC-DN-01",
        "participant_id": pid,
        "occurred_at": "2026-02-01T08:00:00+07:00",
        "sex": "F",
        "age_years": 52,
        "weight_kg": 64,
        "site_id": site,
        "enrolled_at": "2026-02-01T08:00:00+07:00",
        **kw,
    }


def lab(pid: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_type": "lab.resulted",
        "event_id": str(uuid.uuid4()),
        "trial_id": "UCMSC-DN-01",
        "participant_id": pid,
        "occurred_at": "2026-03-01T08:00:00+07:00",
        "visit": "M1",
        "analyte": "creatinine",
        "value": 106,
        "unit": "umol/L",
        **kw,
    }


async def test_an_accepted_event_is_on_its_topic_with_recorded_by_from_the_key(
    api: Api, kafka: str
) -> None:
    pid = unique("API")
    body = [enrolment(pid), lab(pid, recorded_by="someone-else")]
    r = await api.client.post("/v1/events", json=body, headers=api.h(api.site_a))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["accepted"] == 2 and [x["outcome"] for x in out["results"]] == ["accepted"] * 2
    placed = out["results"][1]
    (raw,) = await consume_from(kafka, "trial.events", {placed["partition"]: placed["offset"]})
    event = decode(raw)
    assert str(event.event_id) == body[1]["event_id"]
    assert event.recorded_by.startswith("site:sardjito/key:")
    assert (event.value, event.unit, event.original_unit) == (106 / 88.4, "mg/dL", "umol/L")  # type: ignore[union-attr]


async def test_a_duplicate_is_stored_once_and_the_answer_says_so(api: Api) -> None:
    pid = unique("DUP")
    body = enrolment(pid)
    first = await api.client.post("/v1/events", json=body, headers=api.h(api.site_a))
    again = await api.client.post("/v1/events", json=body, headers=api.h(api.site_a))
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["results"][0]["outcome"] == "duplicate"
    assert (await api.parts.store.counts())["accepted_events"] == 1
    changed = await api.client.post(
        "/v1/events", json={**body, "age_years": 53}, headers=api.h(api.site_a)
    )
    assert changed.status_code == 409
    assert changed.json()["errors"][0]["field"] == "event_id"


async def test_the_events_counter_counts_each_event_by_kind_and_outcome(api: Api) -> None:
    async def counted() -> dict[tuple[str, str], float]:
        text = (await api.client.get("/metrics")).text
        out = {}
        for kind in ("participant.enrolled", "lab.resulted"):
            for outcome in ("accepted", "duplicate"):
                series = (
                    "safety_monitor_ingest_events_total"
                    f'{{event_type="{kind}",outcome="{outcome}",source="api"}} '
                )
                line = next((x for x in text.splitlines() if x.startswith(series)), "")
                out[(kind, outcome)] = float(line.rsplit(" ", 1)[1]) if line else 0.0
        return out

    pid = unique("CNT")
    before = await counted()
    labs = [lab(pid) for _ in range(3)]
    first = await api.client.post(
        "/v1/events", json=[enrolment(pid), *labs], headers=api.h(api.site_a)
    )
    again = await api.client.post(
        "/v1/events", json=[*labs[:2], lab(pid)], headers=api.h(api.site_a)
    )
    assert (first.status_code, again.status_code) == (201, 201)
    after = await counted()
    assert {k: after[k] - before[k] for k in after} == {
        ("participant.enrolled", "accepted"): 1,
        ("participant.enrolled", "duplicate"): 0,
        ("lab.resulted", "accepted"): 4,
        ("lab.resulted", "duplicate"): 2,
    }


async def test_an_idempotency_key_replays_the_first_answer(api: Api) -> None:
    pid = unique("IDK")
    headers = api.h(api.site_a, **{"Idempotency-Key": "batch-7"})
    first = await api.client.post("/v1/events", json=enrolment(pid), headers=headers)
    again = await api.client.post(
        "/v1/events",
        content=first.request.content,
        headers={**headers, "content-type": "application/json"},
    )
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["results"] == first.json()["results"]
    other = await api.client.post("/v1/events", json=enrolment(pid), headers=headers)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"


async def refused(
    api: Api, body: Any, status: int, key: str | None = None, **kw: Any
) -> dict[str, str]:
    r = await api.client.post(
        "/v1/events", headers=api.h(key or api.site_a), **({"json": body} | kw)
    )
    assert r.status_code == status, r.text
    return {e["field"]: e["reason"] for e in r.json()["errors"]}


async def test_bad_input_gets_a_4xx_naming_the_field_and_reason(api: Api) -> None:
    pid = unique("BAD")
    assert (
        await api.client.post("/v1/events", json=enrolment(pid), headers=api.h(api.site_a))
    ).status_code == 201
    errors = await refused(api, None, 400, content=b'{"event_type": ')
    assert "not valid JSON" in errors["(body)"]
    assert "age_years" in await refused(api, enrolment(unique("T"), age_years="old"), 422)
    assert "'mmol/L' is not accepted" in (await refused(api, lab(pid, unit="mmol/L"), 422))["unit"]
    assert (
        "physiological range"
        in (await refused(api, lab(pid, value=95, unit="mg/dL"), 422))["value"]
    )
    assert (
        "unknown participant"
        in (await refused(api, lab(unique("NOBODY")), 422, key=api.admin))["participant_id"]
    )
    # a site key gets one answer whether the participant is unknown or another site's
    unknown = await refused(api, lab(unique("NOBODY")), 403, key=api.site_b)
    assert unknown == await refused(api, lab(pid), 403, key=api.site_b)
    assert "no participant of site other" in unknown["participant_id"]
    assert (
        "cannot enrol"
        in (await refused(api, enrolment(unique("X"), site="sardjito"), 403, key=api.site_b))[
            "site_id"
        ]
    )
    big = [lab(pid)] * 40000
    assert "(body)" in await refused(api, big, 413)
    assert "X-API-Key" in await refused(api, lab(pid), 401, key="sm_wrong")
    # the refused requests stored nothing
    assert (await api.parts.store.counts())["accepted_events"] == 1


async def test_a_refused_batch_stores_nothing_and_names_the_index(api: Api) -> None:
    pid = unique("BATCH")
    body = [enrolment(pid), lab(pid), lab(pid, analyte="sodium")]
    r = await api.client.post("/v1/events", json=body, headers=api.h(api.site_a))
    assert r.status_code == 422
    assert r.json()["errors"][0]["index"] == 2 and r.json()["errors"][0]["field"] == "analyte"
    assert (await api.parts.store.counts())["accepted_events"] == 0


async def test_an_admin_key_writes_any_site_and_alerts_cannot_be_submitted(api: Api) -> None:
    pid = unique("ADM")
    r = await api.client.post(
        "/v1/events", json=enrolment(pid, site="other"), headers=api.h(api.admin)
    )
    assert r.status_code == 201
    alert = {
        "event_type": "alert.raised",
        "event_id": str(uuid.uuid4()),
        "trial_id": "T",
        "occurred_at": "2026-03-01T08:00:00Z",
        "alert_id": str(uuid.uuid4()),
        "rule_id": "x",
        "rule_version": 1,
        "severity": "info",
        "title": "t",
        "evidence": [str(uuid.uuid4())],
    }
    assert "event_type" in await refused(api, alert, 422, key=api.admin)


async def test_a_503_says_whether_kafka_cannot_be_reached_or_did_not_acknowledge(
    tmp_path: Any,
) -> None:
    """An operator reading the answer (or a client's log) learns which: no broker listening
    (no address or client error leaks into the answer), or a broker that stopped answering."""
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens here
    api = await make_api(nobody, tmp_path / "ingest.db")
    try:
        r = await api.client.post("/v1/events", json=enrolment(unique("NONE")),
                                  headers=api.h(api.site_a))  # fmt: skip
        assert r.status_code == 503, r.text
        assert r.json()["errors"] == [{"field": "(service)", "reason": "Kafka cannot be reached"}]
        assert "127.0.0.1" not in r.text
        assert _counter(api, "safety_monitor_ingest_kafka_unavailable_total") == 1
    finally:
        await api.client.aclose()
        await api.parts.log.close()
        await api.parts.store.close()


def _counter(api: Api, name: str) -> float:
    value = api.parts.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_with_kafka_down_the_api_answers_503_and_after_restart_the_same_request_succeeds(
    tmp_path: Any,
) -> None:
    launcher: KafkaLauncher = launcher_in(tmp_path / "k")
    await asyncio.to_thread(launcher.up)  # the launcher runs its own event loop
    api = await make_api(launcher.bootstrap, tmp_path / "ingest.db")
    try:
        pid = unique("OUT")
        ok = await api.client.post("/v1/events", json=enrolment(pid), headers=api.h(api.site_a))
        assert ok.status_code == 201
        assert (await api.client.get("/readyz")).status_code == 200
        await asyncio.to_thread(launcher.down)
        body = json.dumps([lab(pid), lab(pid)])
        r = await api.client.post(
            "/v1/events",
            content=body,
            headers=api.h(api.site_a, **{"content-type": "application/json"}),
        )
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        # the broker was there and went away: it stopped answering
        assert r.json()["errors"][0]["reason"] == "Kafka did not acknowledge in time"
        assert (await api.client.get("/readyz")).status_code == 503
        assert (await api.parts.store.counts())["accepted_events"] == 1  # nothing half-written
        await asyncio.to_thread(launcher.up)
        again = await api.client.post(
            "/v1/events",
            content=body,
            headers=api.h(api.site_a, **{"content-type": "application/json"}),
        )
        assert again.status_code == 201, again.text
        assert (await api.parts.store.counts())["accepted_events"] == 3
    finally:
        await api.client.aclose()
        await api.parts.log.close()
        await api.parts.store.close()
        await asyncio.to_thread(launcher.down, purge=True)


async def test_health_metrics_and_openapi(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).status_code == 200
    spec = (await api.client.get("/openapi.json")).json()
    assert "/v1/events" in spec["paths"]
    assert "safety_monitor_ingest_requests_total" in (await api.client.get("/metrics")).text


async def test_every_error_has_one_shape_and_an_unhandled_one_is_counted(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    long_key = "k" * 300
    r = await api.client.post(
        "/v1/events", json=[], headers=api.h(api.site_a, **{"Idempotency-Key": long_key})
    )
    assert r.status_code == 422 and set(r.json()) == {"detail", "errors"}
    assert r.json()["errors"][0]["field"] == "header.idempotency-key"
    assert long_key not in r.text  # FastAPI's own answer echoed the input
    missing = await api.client.get("/nowhere")
    assert missing.status_code == 404 and set(missing.json()) == {"detail", "errors"}

    async def broken(secret: str) -> None:
        raise RuntimeError("database fell over while reading DN-001")

    monkeypatch.setattr(api.parts.store, "principal", broken)
    r = await api.client.post("/v1/events", json=lab("DN-001"), headers=api.h(api.site_a))
    assert r.status_code == 500 and "DN-001" not in r.text
    assert r.json()["detail"] == "internal error"
    # the log names the error and where it happened (it once logged exc_info outside the except
    # block: no exception at all, and the formatter itself failed)
    logged = [rec for rec in caplog.records if rec.getMessage().startswith("unhandled error")]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is RuntimeError
    assert (
        JsonFormatter("ingest")
        .formatException(logged[0].exc_info)
        .startswith("builtins.RuntimeError at ")
    )
    metrics = (await api.client.get("/metrics")).text
    assert 'safety_monitor_ingest_requests_total{route="/v1/events",status="500"} 1.0' in metrics


async def test_event_requests_are_counted_under_their_route_whatever_they_answer(
    api: Api,
) -> None:
    async def requests(status: str) -> float:
        series = f'safety_monitor_ingest_requests_total{{route="/v1/events",status="{status}"}} '
        text = (await api.client.get("/metrics")).text
        line = next((x for x in text.splitlines() if x.startswith(series)), "")
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = {s: await requests(s) for s in ("201", "401", "400")}
    pid = unique("RT")
    assert (
        await api.client.post("/v1/events", json=enrolment(pid), headers=api.h(api.site_a))
    ).status_code == 201
    assert (await api.client.post("/v1/events", json=enrolment(pid))).status_code == 401
    assert (
        await api.client.post("/v1/events", content=b"{", headers=api.h(api.site_a))
    ).status_code == 400
    assert {s: await requests(s) - n for s, n in before.items()} == {"201": 1, "401": 1, "400": 1}


async def test_a_refused_batch_claims_no_participant(api: Api) -> None:
    """An enrolment in a batch refused whole (here for an id reused with other content) leaves
    the participant free: another site's enrolment of it is accepted, not 'enrolled elsewhere'."""
    pid, other = unique("CLM"), unique("CLM")
    first = lab(other)
    assert (await api.client.post("/v1/events", json=[enrolment(other), first],
                                  headers=api.h(api.site_a))).status_code == 201  # fmt: skip
    reused = {**first, "participant_id": pid, "value": 120}
    refused = await api.client.post(
        "/v1/events", json=[enrolment(pid), reused], headers=api.h(api.site_a)
    )
    assert refused.status_code == 409, refused.text
    elsewhere = await api.client.post(
        "/v1/events", json=enrolment(pid, site="other"), headers=api.h(api.site_b)
    )
    assert elsewhere.status_code == 201, elsewhere.text


async def test_one_participant_has_one_spelling(api: Api) -> None:
    """dn-101, DN_101 and DN-101. were three participants beside DN-101."""
    pid = unique("SP").upper()
    assert (await api.client.post("/v1/events", json=enrolment(pid),
                                  headers=api.h(api.site_a))).status_code == 201  # fmt: skip
    for other in (pid.lower(), pid.replace("-", "_"), pid + "."):
        r = await api.client.post("/v1/events", json=enrolment(other), headers=api.h(api.site_a))
        assert r.status_code == 422, (other, r.text)
        (error,) = r.json()["errors"]
        assert error["field"] == "participant_id"
        assert "written differently" in error["reason"] and f"use {pid}" in error["reason"]
    # and in one request: the second spelling is refused
    new = unique("SQ").upper()
    r = await api.client.post(
        "/v1/events", json=[enrolment(new), enrolment(new.lower())], headers=api.h(api.site_a)
    )
    assert r.status_code == 422 and r.json()["errors"][0]["index"] == 1


async def test_a_trial_with_a_participant_pattern_refuses_any_other_form(
    kafka: str, tmp_path: Any
) -> None:
    api = await make_api(kafka, tmp_path / "ingest.db", ingest_participant_id_pattern="DN-[0-9]{3}")
    try:
        for pid in ("dn-101", "DN_101", "DN-101.", "DN-1011"):
            r = await api.client.post("/v1/events", json=enrolment(pid), headers=api.h(api.site_a))
            assert r.status_code == 422, r.text
            assert "is not in this trial's form 'DN-[0-9]{3}'" in r.json()["errors"][0]["reason"]
        ok = await api.client.post(
            "/v1/events", json=enrolment(f"DN-{uuid.uuid4().int % 900 + 100}"),
            headers=api.h(api.site_a),
        )  # fmt: skip
        assert ok.status_code in (201, 409), ok.text  # (409: that number enrolled by another run)
    finally:
        await api.client.aclose()
        await api.parts.log.close()
        await api.parts.store.close()
