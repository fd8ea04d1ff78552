"""SDTM import on the real broker: row by row, nothing lost, a second import adds nothing."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from services.ingest.domain.policy import Principal, Role
from services.ingest.importer import ImportSummary, import_sdtm
from tests.integration.ingest.conftest import Api

DATA = Path(__file__).resolve().parents[2] / "data" / "sdtm"
ADMIN = Principal("test-import", Role.ADMIN, None)


async def run(api: Api, path: Path, **kw: object) -> ImportSummary:
    return await import_sdtm(path.name, path.read_bytes(), api.parts.ingest, ADMIN, UTC, **kw)  # type: ignore[arg-type]


async def test_the_example_files_import_row_by_row_and_twice_adds_nothing(api: Api) -> None:
    dm = await run(api, DATA / "dm.csv")
    assert (dm.accepted, dm.rejected_rows) == (3, 3)
    ex = await run(api, DATA / "ex.csv")
    assert (ex.accepted, ex.rejected_rows) == (1, 1)
    lb = await run(api, DATA / "lb.csv")
    assert (lb.accepted, lb.rejected_rows) == (7, 6)
    reasons = {r.row: f"{r.field}: {r.reason}" for r in lb.rejections}
    assert "unknown participant" in reasons["row 10"]
    assert "physiological range" in reasons["row 8"]
    ae = await run(api, DATA / "ae.csv")
    assert (ae.accepted, ae.rejected_rows) == (5, 1)  # the blank AEREL row accepted as not_assessed
    for summary in (dm, ex, lb, ae):
        assert summary.accepted + summary.rejected_rows == summary.rows  # nothing unaccounted
    again = [await run(api, DATA / n) for n in ("dm.csv", "ex.csv", "lb.csv", "ae.csv")]
    assert [s.accepted for s in again] == [0, 0, 0, 0]
    assert [s.duplicates for s in again] == [3, 1, 7, 5]
    assert (await api.parts.store.counts())["accepted_events"] == 3 + 1 + 7 + 5


async def test_a_sas_transport_file_imports_like_its_csv(api: Api, tmp_path: Path) -> None:
    xpt = tmp_path / "dm.xpt"
    frame = pd.read_csv(DATA / "dm.csv", dtype=str).fillna("")
    frame["AGE"] = pd.to_numeric(frame["AGE"], errors="coerce")
    pyreadstat.write_xport(frame, str(xpt), table_name="DM", file_format_version=5)
    summary = await run(api, xpt)
    assert (summary.domain, summary.accepted, summary.rejected_rows) == ("DM", 3, 3)


async def test_the_upload_route_returns_the_summary(api: Api) -> None:
    headers = api.h(api.admin, **{"content-type": "text/csv"})
    await api.client.post(
        "/v1/imports/sdtm",
        params={"filename": "dm.csv"},
        content=(DATA / "dm.csv").read_bytes(),
        headers=headers,
    )
    r = await api.client.post(
        "/v1/imports/sdtm",
        params={"filename": "ae.csv"},
        content=(DATA / "ae.csv").read_bytes(),
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected_rows"]) == (5, 1)
    assert "AEREL: '' is not a known causality term" not in body["rejected_by_reason"]
    bad = await api.client.post(
        "/v1/imports/sdtm",
        params={"filename": "vs.csv"},
        content=b"STUDYID,DOMAIN\nX,VS\n",
        headers=headers,
    )
    assert (
        bad.status_code == 400
        and "cannot tell the SDTM domain" in bad.json()["errors"][0]["reason"]
    )


async def test_a_site_key_imports_only_its_own_sites_rows(api: Api) -> None:
    headers = api.h(api.site_b, **{"content-type": "text/csv"})
    r = await api.client.post(
        "/v1/imports/sdtm",
        params={"filename": "dm.csv"},
        content=(DATA / "dm.csv").read_bytes(),
        headers=headers,
    )
    assert r.json()["accepted"] == 0
    assert any("cannot enrol" in reason for reason in r.json()["rejected_by_reason"])


@pytest.mark.external
async def test_the_cdisc_pilot_dm_lb_ae_import_with_nothing_lost(
    api: Api, shared_data: Path
) -> None:
    sdtm = shared_data / "sdtm"
    dm = await run(api, sdtm / "dm.csv")
    assert (dm.rows, dm.accepted, dm.rejected_rows) == (306, 254, 52)  # 52 screen failures
    started = time.perf_counter()
    lb = await run(api, sdtm / "lb.csv", progress=True)
    seconds = time.perf_counter() - started
    print(f"\npilot LB: {lb.rows} rows in {seconds:.1f}s ({lb.rows / seconds:.0f} rows/s)")
    assert lb.rows == 59580
    assert lb.accepted + lb.rejected_rows == lb.rows
    assert lb.accepted == 1828  # the CREAT rows: the pilot has no eGFR, UACR or cytokines
    monitored = Counter(r.reason for r in lb.rejections if "not monitored" not in r.reason)
    assert not monitored, monitored  # every other rejection is a test the trial does not monitor
    ae = await run(api, sdtm / "ae.csv")
    # every AE accepted: the 4 with a blank AEREL as not_assessed, never lost to safety review
    assert (ae.rows, ae.accepted, ae.rejected_rows) == (1191, 1191, 0)
    assert ae.notes["AEREL blank: relatedness not_assessed"] == 4
    assert sum(n for note, n in ae.notes.items() if "taken as serious" in note) == 36
    assert ae.notes["AEOUT=FATAL: CTCAE grade 5"] == 3
    ds = await run(api, sdtm / "ds.csv")
    # one disposition per subject, the 52 screen failures (never enrolled) among them; the
    # 290 milestones (FINAL LAB VISIT, ...) refused as not dispositions, each with its reason
    assert (ds.rows, ds.accepted, ds.rejected_rows) == (596, 306, 290)
    assert all("a milestone, not a disposition" in r.reason for r in ds.rejections)
    assert (await api.parts.store.counts())["accepted_events"] == 254 + 1828 + 1191 + 306


async def test_a_record_imported_before_ids_were_scoped_by_site_stays_one_event(
    api: Api,
) -> None:
    """Ids of imported records now include the participant's site; a record accepted under its
    earlier (unscoped) id is recognised by it, so a re-import adds nothing."""
    import csv
    import io
    import uuid
    from zoneinfo import ZoneInfo

    from services.ingest.domain import sdtm

    subject = f"DN-{uuid.uuid4().hex[:6]}-1"
    text = (
        "STUDYID,DOMAIN,USUBJID,SUBJID,RFSTDTC,RFICDTC,SITEID,AGE,AGEU,BRTHDTC,SEX\n"
        f"UCMSC-DN-01,DM,{subject},1,2026-01-08,2026-01-05,sardjito,55,YEARS,,F\n"
    )
    (row,) = csv.DictReader(io.StringIO(text))
    earlier = sdtm.dm(row, ZoneInfo("UTC"), [])  # as the importer mapped it before
    first = await api.client.post("/v1/events", json=earlier, headers=api.h(api.site_a))
    assert first.status_code == 201, first.text
    headers = api.h(api.site_a, **{"content-type": "text/csv"})
    again = await api.client.post(
        "/v1/imports/sdtm", params={"filename": "dm.csv"}, content=text.encode(), headers=headers
    )
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1)
    fresh = text.replace(subject, f"DN-{uuid.uuid4().hex[:6]}-2")
    new = await api.client.post(
        "/v1/imports/sdtm", params={"filename": "dm.csv"}, content=fresh.encode(), headers=headers
    )
    assert new.json()["accepted"] == 1  # a new record gets its site-scoped id
