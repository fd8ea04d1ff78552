"""The demo's DSMB report, read as a board member would: the demo story's events and the alerts
the rules raise on them (two acknowledged by the safety officer) go through the audit store
(SQLite and PostgreSQL), the report is fetched from the DSMB API and opened in headless
Chromium (Debian's, driven by Playwright). Each section is saved as a screenshot under
test-artifacts/report/, every figure is checked for its title and axis labels, and the numbers a
reader looks at first are asserted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from contracts import (
    AeReported,
    AlertAcknowledged,
    AlertRaised,
    AnyEvent,
    ParticipantEnrolled,
    Source,
    encode,
)
from services.audit.adapters.store import AuditStore, Incoming, TokenStore
from services.audit.api import create_app
from services.audit.report import SECTIONS
from services.cli import _pdf
from services.safety_rules.evaluate import run
from services.safety_rules.rules_config import load_rules
from services.sample import story
from tests.integration.audit.test_projection import TRUSTED
from tests.integration.browser import FLAGS, chromium_or_skip

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "report"
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)  # every window of the story has closed
PANELS = ("eGFR, CKD-EPI 2021", "Serum creatinine", "UACR")
Y_LABELS = ("eGFR (mL/min/1.73 m²)", "Serum creatinine (mg/dL)", "UACR (mg/g)")


def ack(a: AlertRaised, hours: float) -> AlertAcknowledged:
    at = a.recorded_at + timedelta(hours=hours)
    return AlertAcknowledged(
        event_id=uuid.uuid5(a.alert_id, "ack"), trial_id=a.trial_id, alert_id=a.alert_id,
        participant_id=a.participant_id, occurred_at=at, recorded_at=at,
        recorded_by="safety-officer", source=Source.NOTIFIER, acknowledged_by="safety-officer",
    )  # fmt: skip


def another_trials_participant() -> list[AnyEvent]:
    """A sponsor's other trial on the same trail (ingest accepts INGEST_OTHER_TRIAL_IDS): one
    participant with a fatal SAE, which must not appear in this trial's report."""
    at = datetime(2026, 2, 1, tzinfo=UTC)
    env = {"trial_id": "CDISCPILOT01", "participant_id": "01-701-1015", "occurred_at": at,
           "recorded_at": at, "recorded_by": "sponsor", "source": Source.SDTM}  # fmt: skip
    return [
        ParticipantEnrolled(**env, event_id=uuid.uuid4(), sex="F", age_years=63,
                            weight_kg=54.0, site_id="701", enrolled_at=at),
        AeReported(**env, event_id=uuid.uuid4(), ae_id="AE-1", term="Sudden death",
                   onset_date="2026-02-01", ctcae_grade=5, serious=True,
                   seriousness_criteria=["death"], relatedness="possible", outcome="fatal"),
    ]  # fmt: skip


async def demo_report(store: AuditStore) -> str:
    events: list[AnyEvent] = [e for c in story() for e in c.events] + another_trials_participant()
    alerts = run(events, load_rules(), as_of=AS_OF)  # type: ignore[arg-type]
    assert {a.trial_id for a in alerts} == {"UCMSC-DN-01", "CDISCPILOT01"}
    sae = next(a for a in alerts if a.rule_id == "sae.reported" and a.participant_id == "DN-005")
    aki = next(a for a in alerts if a.rule_id == "creatinine.aki" and a.participant_id == "DN-004")
    acks = [ack(sae, 3), ack(aki, 30)]  # the SAE in time; the AKI a day and more later
    topics = [("trial.events", e) for e in events] + [("safety.alerts", a) for a in alerts]
    topics += [("safety.alert-lifecycle", a) for a in acks]
    await store.append([Incoming(t, 0, n, encode(e)) for n, (t, e) in enumerate(topics)])
    _, token = await TokenStore(store).add("dsmb-chair")
    app = create_app(store, TRUSTED)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://audit"
    ) as client:
        assert (await client.get("/report")).status_code == 401
        dsmb = {"Authorization": f"Bearer {token}"}
        which = await client.get("/report", headers=dsmb)  # two trials on the trail: which?
        assert which.status_code == 400
        assert which.json()["trials"] == ["CDISCPILOT01", "UCMSC-DN-01"]
        r = await client.get("/report", params={"trial_id": "UCMSC-DN-01"}, headers=dsmb)
    assert r.status_code == 200
    return r.text


async def cells(page: Any, selector: str) -> list[list[str]]:
    rows = page.locator(f"{selector} tbody tr")
    return [
        [c.strip() for c in await rows.nth(i).locator("td").all_inner_texts()]
        for i in range(await rows.count())
    ]


async def table_after(page: Any, section: str, heading: str) -> list[list[str]]:
    return await cells(page, f"#{section} h3:text-is('{heading}') + table")


async def test_the_demo_report_in_chromium_section_by_section(
    audit_store: AuditStore, audit_url: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    chromium = chromium_or_skip()
    html = await demo_report(audit_store)
    db = "postgresql" if audit_url.startswith("postgresql") else "sqlite"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    saved = ARTIFACTS / f"report-{db}.html"
    saved.write_text(html)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        page = await browser.new_page()
        await page.goto(saved.as_uri())
        for section, _ in SECTIONS:
            box = await page.locator(f"section#{section}").bounding_box()
            assert box is not None and box["height"] > 60, section
            shot = ARTIFACTS / f"{db}-{section}.png"
            await page.locator(f"section#{section}").screenshot(path=str(shot))
            assert shot.stat().st_size > 0

        # every participant's figure: three panels, each titled with the participant, axes labelled
        figures = page.locator("section#trajectories figure.participant")
        assert await figures.count() == 10
        for i in range(10):
            pid = f"DN-{i + 1:03d}"
            shown = await figures.nth(i).locator("svg text").all_text_contents()
            texts = [t.strip() for t in shown]
            for panel, y_label in zip(PANELS, Y_LABELS, strict=True):
                assert f"{pid}: {panel}" in texts, (pid, panel)
                assert y_label in texts, (pid, y_label)
            assert texts.count("Study day (days from the injection)") == 3, pid
            title = figures.nth(i).locator("svg text", has_text=f"{pid}: eGFR")
            tbox = await title.bounding_box()
            assert tbox is not None and tbox["width"] > 50  # drawn, not just present
        dn010 = await figures.nth(9).locator("svg text").all_text_contents()
        assert any("alert: egfr.kidney_failure (critical)" in t for t in dn010)
        assert any("baseline" in t for t in dn010)
        assert any("G5 <15, kidney failure" in t for t in dn010)  # a KDIGO threshold, in range
        cohort = await page.locator("section#secondary figure svg text").all_text_contents()
        assert "eGFR, CKD-EPI 2021: change from baseline" in [t.strip() for t in cohort]
        assert "Visit (target study day)" in [t.strip() for t in cohort]

        # the numbers a board member reads first
        people = dict((r[0], r[1:]) for r in await table_after(
            page, "primary", "Participants with at least one (of 10 enrolled)"))  # fmt: skip
        assert people["Any AE"] == ["5", "50.0"]
        assert people["Any SAE"] == ["3", "30.0"]  # not the other trial's fatal SAE
        assert people["Death"] == ["1", "10.0"]  # DN-007
        assert people["Any AE with locality not recorded"] == ["1", "10.0"]  # DN-003's fatigue
        assert people["Any AE with relatedness not yet assessed"] == ["1", "10.0"]
        locality = await table_after(page, "primary", "Locality of AEs by source (events)")
        assert locality == [["demo", "2", "2", "1"]]
        clocks = await table_after(page, "compliance", "SAE and SUSAR clocks")
        states = [(r[0], r[1], r[-1]) for r in clocks]
        assert states == [
            ("SAE, 24 h", "DN-005", "met"),  # acknowledged 3 h after it was raised
            ("SUSAR, 15 days", "DN-005", "missed"),
            ("SAE, 24 h", "DN-009", "missed"),
            ("SAE, 24 h", "DN-007", "missed"),  # the death after M9, never acknowledged
        ]
        by_rule = "Alerts by rule, and time from raised to acknowledged"
        response = {r[0]: r for r in await table_after(page, "compliance", by_rule)}
        assert response["sae.reported"][3:6] == ["1", "0", "3.0"]
        assert response["creatinine.aki"][3:6] == ["1", "0", "30.0"]
        assert len(response) == 15  # every rule fired in the story
        egfr = await table_after(page, "secondary", "eGFR, CKD-EPI 2021 (mL/min/1.73 m²)")
        # DN-001 missed M9; DN-006 withdrew after M6, DN-007 died after M9
        assert [r[1] for r in egfr] == ["10", "10", "10", "8", "8"]
        il10 = await table_after(page, "secondary", "IL-10 (pg/mL)")
        assert [(r[1], r[2], r[4]) for r in il10] == [
            (n, "0.50", "0.50") for n in ("10", "10", "10", "8", "8")
        ]  # 6.0 at baseline, 6.5 at each visit

        # the participant flow, first: who is still on study, and each visit's denominator
        flow = dict((r[0], r[1]) for r in await cells(page, "#disposition table.flow"))
        assert (flow["Enrolled"], flow["Injected"], flow["On study at the cut-off"]) == (
            "10", "10", "8",
        )  # fmt: skip
        assert (flow["Withdrew consent"], flow["Died"]) == ("1", "1")
        denominators = "Injected participants still on study at each visit: its denominator"
        on_study = await table_after(page, "disposition", denominators)
        assert on_study == [["10", "10", "10", "9", "8"]]  # DN-006 left at day 190, DN-007 at 300

        # AEs by SOC and PT as the sites coded them; DN-003's fatigue, uncoded, by its verbatim
        soc = [r[:4] for r in await cells(page, "#soc table.soc")]
        assert soc[:2] == [
            ["Cardiac disorders", "1", "10.0", "1"], ["Myocardial infarction", "1", "10.0", "1"],
        ]  # fmt: skip
        assert soc[-2:] == [["Not coded (verbatim term)"], ["Fatigue", "1", "10.0", "1"]]
        assert len(soc) == 2 * 4 + 2
        shift = await table_after(page, "shifts", "Albuminuria category (A): 10 participants")
        assert shift[1] == ["A2", "0", "10", "0"]
        await browser.close()
    if db == "sqlite":  # `report --pdf`: the same page printed by chromium
        pdf = ARTIFACTS / "report.pdf"
        assert _pdf(saved, pdf) == 0
        assert pdf.read_bytes().startswith(b"%PDF")
