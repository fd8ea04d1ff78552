"""The DSMB API and report over a projection of the real broker; rebuild equals live."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import AlertRaised
from services.audit.adapters.store import AuditStore, TokenStore
from services.audit.api import create_app
from services.audit.rebuild import rebuild
from services.safety_rules.evaluate import run
from services.safety_rules.rules_config import load_rules
from services.sample import demo_trial
from tests.integration.audit.test_projection import TRUSTED, _tamper, caught_up
from tests.integration.kafka_io import produce

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


def demo_alerts() -> list[AlertRaised]:
    """The alerts the rules raise on the demo trial (the worker's engine, offline)."""
    return run(list(demo_trial()), load_rules(), as_of=None)  # type: ignore[arg-type]


@pytest.fixture
async def dsmb(kafka: str, audit_store: AuditStore) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    await produce(kafka, list(demo_trial()))
    await produce(kafka, demo_alerts())  # what the rules worker puts on safety.alerts for it
    await caught_up(kafka, audit_store)
    _, token = await TokenStore(audit_store).add("dsmb-chair")
    app = create_app(audit_store, TRUSTED)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://audit"
    ) as client:
        yield client, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_trail_is_queried_by_participant_type_and_time_with_pagination(
    dsmb: tuple[httpx.AsyncClient, str],
) -> None:
    client, token = dsmb
    assert (await client.get("/audit/events")).status_code == 401
    r = await client.get(
        "/audit/events", params={"participant_id": "DN-004", "limit": 5}, headers=bearer(token)
    )
    first = r.json()
    assert len(first["items"]) == 5 and first["next_after_seq"] == first["items"][-1]["seq"]
    rest = (
        await client.get(
            "/audit/events",
            params={
                "participant_id": "DN-004",
                "after_seq": first["next_after_seq"],
                "limit": 1000,
            },
            headers=bearer(token),
        )
    ).json()
    everything = first["items"] + rest["items"]
    assert {e["participant_id"] for e in everything} == {"DN-004"}
    assert [e["seq"] for e in everything] == sorted(e["seq"] for e in everything)
    labs = (
        await client.get(
            "/audit/events",
            params={
                "event_type": "lab.resulted",
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-02-01T00:00:00Z",
            },
            headers=bearer(token),
        )
    ).json()["items"]
    assert labs and all(e["event"]["event_type"] == "lab.resulted" for e in labs)
    assert all("2026-01" in e["occurred_at"] for e in labs)
    sae = (
        await client.get("/audit/events", params={"rule_id": "sae.reported"}, headers=bearer(token))
    ).json()["items"]
    crit = (
        await client.get("/audit/events", params={"severity": "critical"}, headers=bearer(token))
    ).json()["items"]
    assert {e["rule_id"] for e in sae} <= {"sae.reported"}
    assert all(e["severity"] == "critical" for e in crit)


async def test_timeline_registers_and_verify(dsmb: tuple[httpx.AsyncClient, str]) -> None:
    client, token = dsmb
    timeline = (await client.get("/participants/DN-005/timeline", headers=bearer(token))).json()
    types = [e["event_type"] for e in timeline["items"]]
    assert types[0] == "participant.enrolled" and "ae.reported" in types
    labs = (
        await client.get(
            "/participants/DN-004/labs", params={"analyte": "creatinine"}, headers=bearer(token)
        )
    ).json()["items"]
    assert [x["visit"] for x in labs] == ["baseline", "M1", "M3"]
    aes = (await client.get("/aes", headers=bearer(token))).json()["items"]
    assert {(a["participant_id"], a["serious"]) for a in aes} >= {
        ("DN-005", True),
        ("DN-002", False),
    }
    verify = await client.get("/audit/verify", headers=bearer(token))
    assert verify.status_code == 200 and verify.json()["ok"] is True
    # the alert register: every alert the rules raised on this trial, with its status
    raised = {str(a.alert_id): a for a in demo_alerts()}
    assert len(raised) >= 5  # the fixture raises alerts: an empty register fails here
    items = (await client.get("/alerts", headers=bearer(token))).json()["items"]
    register = {i["alert_id"]: i for i in items if i["alert_id"] in raised}
    assert register.keys() == raised.keys()
    assert {(i["participant_id"], i["rule_id"]) for i in register.values()} >= {
        ("DN-004", "creatinine.aki"),
        ("DN-005", "sae.reported"),
        ("DN-005", "susar.clock"),
        ("DN-007", "dose.deviation"),
    }
    sae = next(i for i in register.values() if i["rule_id"] == "sae.reported")
    assert sae["severity"] == "critical" and sae["status"] == "raised" and sae["due_by"]
    assert sae["acknowledged_at"] is None  # nobody has acknowledged it yet
    critical = (
        await client.get("/alerts", params={"severity": "critical"}, headers=bearer(token))
    ).json()["items"]
    assert all(i["severity"] == "critical" for i in critical)
    assert {i["alert_id"] for i in critical} >= {
        k for k, a in raised.items() if a.severity.value == "critical"
    }


async def test_exports_stream_csv_and_ndjson(dsmb: tuple[httpx.AsyncClient, str]) -> None:
    client, token = dsmb
    nd = await client.get(
        "/audit/export",
        params={"format": "ndjson", "participant_id": "DN-001"},
        headers=bearer(token),
    )
    lines = [json.loads(x) for x in nd.text.splitlines()]
    assert lines and all(x["participant_id"] == "DN-001" for x in lines)
    as_csv = await client.get("/audit/export", params={"format": "csv"}, headers=bearer(token))
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert len(rows) >= 112 and {"seq", "hash", "canonical"} <= set(rows[0])


async def test_a_row_altered_by_hand_is_named_by_verify(
    dsmb: tuple[httpx.AsyncClient, str], audit_store: AuditStore, audit_url: str
) -> None:
    client, token = dsmb
    await _tamper(
        audit_store, audit_url, "UPDATE audit_log SET recorded_by = 'someone' WHERE seq = 7"
    )
    r = await client.get("/audit/verify", headers=bearer(token))
    assert r.status_code == 409 and r.json()["first_broken_seq"] == 7


async def test_rebuilt_read_models_equal_the_live_ones(kafka: str, audit_store: AuditStore) -> None:
    await produce(kafka, list(demo_trial()))
    await caught_up(kafka, audit_store)
    live = await audit_store.dump_read_models()
    assert live["rm_participants"] and live["rm_labs"]
    await rebuild(kafka, audit_store, progress=False)
    assert await audit_store.dump_read_models() == live
    assert (await audit_store.verify(TRUSTED)).ok  # the log itself was not touched


async def test_a_csv_export_never_hands_a_spreadsheet_a_formula(audit_store: AuditStore) -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    from contracts import LabResulted, Source, encode
    from services.audit.adapters.store import Incoming
    from tests.integration.audit.test_projection import KEY

    at = datetime(2026, 1, 5, tzinfo=UTC)
    common: dict[str, Any] = {"trial_id": "T", "participant_id": "DN-CSV-1", "occurred_at": at,
              "recorded_at": at, "source": Source.API, "analyte": "creatinine"}  # fmt: skip
    common["unit"] = "mg/dL"
    first = LabResulted(event_id=uuid4(), recorded_by='=HYPERLINK("x")', value=1.0, **common)
    fix = LabResulted(event_id=uuid4(), recorded_by="site", value=1.1, supersedes=first.event_id,
                      reason="=cmd|' /C calc'!A0", **common)  # fmt: skip
    await audit_store.append(
        [Incoming("trial.events", 0, n, encode(e)) for n, e in enumerate((first, fix))], KEY, 1
    )
    _, token = await TokenStore(audit_store).add("board")
    app = create_app(audit_store, TRUSTED)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dsmb"
    ) as client:
        r = await client.get("/audit/export", params={"format": "csv"}, headers=bearer(token))
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["recorded_by"] for row in rows] == ['\'=HYPERLINK("x")', "site"]
    assert rows[1]["reason"] == "'=cmd|' /C calc'!A0"
    assert rows[0]["seq"] == "1"  # numbers stay numbers


async def test_a_time_that_does_not_exist_in_utc_is_a_422_naming_the_parameter(
    dsmb: tuple[httpx.AsyncClient, str],
) -> None:
    client, token = dsmb
    for bad in ("9999-12-31T23:59:59-23:59", "2026-01-01T00:00:00"):  # past year 9999; no zone
        r = await client.get("/audit/events", params={"since": bad}, headers=bearer(token))
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "query.since"
    ok = await client.get(
        "/audit/events", params={"until": "2026-01-01T00:00:00+07:00"}, headers=bearer(token)
    )
    assert ok.status_code == 200
