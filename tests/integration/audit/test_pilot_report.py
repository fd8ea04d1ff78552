"""The DSMB report of another trial on the trail, the CDISC pilot (issue 29): its DM, AE and DS
files mapped as ingest maps them and projected into the audit store (SQLite and PostgreSQL);
the report's participant flow and its SOC/PT table equal counts made here straight from the
files, in the page, from the API's JSON and in its CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from contracts import encode, parse_event
from services.audit.adapters.store import AuditReader, AuditStore, Incoming, TokenStore
from services.audit.api import create_app
from services.audit.report import render_report, trial_outcomes
from services.ingest.domain.sdtm import map_rows
from tests.integration.audit.test_projection import TRUSTED

TRIAL = "CDISCPILOT01"
SERVER = {"recorded_by": "sponsor", "source": "sdtm"}


def _rows(sdtm: Path, name: str) -> list[dict[str, str]]:
    with (sdtm / f"{name}.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.external
async def test_the_pilots_flow_and_soc_pt_tables_equal_counts_made_from_its_files(
    shared_data: Path, audit_store: AuditStore
) -> None:
    sdtm = shared_data / "sdtm"
    files = {name: _rows(sdtm, name) for name in ("dm", "ae", "ds")}
    events = []
    for name in ("dm", "ae", "ds"):
        mapped = map_rows(name.upper(), files[name], UTC)
        events += [
            parse_event({**e, **SERVER, "recorded_at": e["occurred_at"]}) for _, e in mapped.events
        ]
    await audit_store.append(
        [Incoming("trial.events", 0, n, encode(e)) for n, e in enumerate(events)]
    )
    o, _ = await trial_outcomes(AuditReader(audit_store), trial_id=TRIAL)

    # the flow: every disposition, by DSDECOD as the file gives it
    dispositions = [r for r in files["ds"] if r["DSCAT"] == "DISPOSITION EVENT"]
    by_term: Counter[str] = Counter()
    for _, term, n in o.flow.recorded:
        by_term[term] += n
    assert by_term == Counter(r["DSDECOD"] for r in dispositions)
    assert sum(by_term.values()) == 306
    assert (o.flow.screen_failures, o.flow.enrolled) == (52, 254)
    ended = dict(o.flow.ended)
    assert ended["Completed"] == 110
    assert ended["Withdrew consent"] == 27
    assert ended["Withdrawn by the investigator: adverse event"] == 92
    assert o.flow.on_study == 254 - sum(ended.values())

    # AEs by SOC and PT: participants with at least one, and events, as counted from ae.csv
    events_by = Counter((r["AESOC"], r["AEDECOD"]) for r in files["ae"])
    people_by: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in files["ae"]:
        people_by[(r["AESOC"], r["AEDECOD"])].add(r["USUBJID"])
    got = {
        (soc.name, pt.name): (pt.events, len(pt.participants))
        for soc, pts in o.soc.socs
        for pt in pts
    }
    assert got == {k: (n, len(people_by[k])) for k, n in events_by.items()}
    socs = {soc.name: (soc.events, len(soc.participants)) for soc, _ in o.soc.socs}
    for soc, (n_events, n_people) in socs.items():
        rows = [r for r in files["ae"] if r["AESOC"] == soc]
        assert (n_events, n_people) == (len(rows), len({r["USUBJID"] for r in rows}))
    assert o.soc.not_coded == []  # every pilot AE is coded

    # the page and the API say the same numbers
    page = await render_report(AuditReader(audit_store), trial_id=TRIAL)
    assert "Participant flow" in page and "Dispositions as recorded" in page
    assert "STUDY TERMINATED BY SPONSOR" in page and "APPLICATION SITE ERYTHEMA" in page
    _, token = await TokenStore(audit_store).add("dsmb-chair")
    app = create_app(audit_store, TRUSTED)
    dsmb = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://audit", headers=dsmb
    ) as client:
        flow = (await client.get("/tables/disposition", params={"trial_id": TRIAL})).json()
        recorded = Counter()
        for item in flow["items"]:
            if item["table"] == "recorded":
                recorded[item["line"].split(" | ", 1)[1]] += item["participants"]
        assert recorded == by_term
        table = await client.get("/tables/soc-pt", params={"trial_id": TRIAL, "format": "csv"})
        assert table.headers["content-type"].startswith("text/csv")
        pts = [r for r in csv.DictReader(io.StringIO(table.text)) if r["level"] == "pt"]
        assert {
            (r["soc"], r["term"]): (int(r["events"]), int(r["participants"])) for r in pts
        } == got
