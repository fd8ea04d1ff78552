"""The DSMB report over whatever the door accepts: events drawn at every bound
(tests/unit/door.py) and the alerts the engine raises on them, appended to a trail and rendered,
never raise, and what a participant's AE term holds is escaped in the page."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from contracts import ClinicalEvent, encode
from services.audit.adapters.store import AuditReader, AuditStore, Incoming
from services.audit.report import render_report
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.evaluate import run_all
from tests.unit.door import NOW, accepted_history


async def _render(events: list[ClinicalEvent], folder: Path) -> str:
    store = AuditStore(f"sqlite+aiosqlite:///{folder / 'audit.db'}")
    await store.migrate()
    try:
        raised = run_all(events, RulesConfig(), as_of=NOW + timedelta(days=400))
        batch = [Incoming("trial.events", 0, n, encode(e)) for n, e in enumerate(events)]
        batch += [Incoming("safety.alerts", 0, n, encode(a)) for n, a in enumerate(raised)]
        await store.append(batch)
        return await render_report(AuditReader(store), now=NOW)
    finally:
        await store.close()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(accepted_history(max_events=6))
def test_the_report_renders_whatever_the_door_accepts(events: list[ClinicalEvent]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        page = asyncio.run(_render(events, Path(folder)))
    assert "<html" in page
    for e in events:
        term = getattr(e, "term", None)
        if term and "<" in term:
            assert term not in page  # escaped, never markup
