"""The DSMB report: one self-contained HTML page (inline CSS and SVG figures) that prints well,
tied to the exact audit-chain head it was read from.

The numbers come from `services/audit/domain/outcomes.py` (pure, unit-tested); this module reads
the read models, draws the figures (`plots.py`) and fills the Jinja2 template. Drawing runs in a
worker thread, so the API's event loop keeps answering while a large trial's figures are drawn.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from clinical.visits import PROTOCOL_WINDOWS
from services.audit.adapters.store import AuditReader
from services.audit.domain.course import Term
from services.audit.domain.outcomes import MEASURES, Outcomes, outcomes, trials, utc
from services.audit.plots import ALERT_PANEL, Mark, cohort_figure, participant_figure

TEMPLATES = Path(__file__).parent / "templates"
SECTIONS = (
    ("disposition", "Participant flow"),
    ("population", "Population"),
    ("soc", "Adverse events by system organ class and preferred term"),
    ("primary", "Primary outcome: adverse events"),
    ("compliance", "Regulatory compliance"),
    ("secondary", "Secondary outcomes: change from baseline"),
    ("shifts", "KDIGO shift tables"),
    ("trajectories", "Participant trajectories"),
    ("methods", "Methods"),
)
NA = "-"


def _num(x: float | None, digits: int = 2) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def _when(at: datetime | None) -> str:
    return NA if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _reasons(excluded: Mapping[str, int]) -> str:
    return "; ".join(f"{reason} {n}" for reason, n in sorted(excluded.items()) if n) or NA


def _words(v: str | None) -> str:
    return (v or NA).replace("_", " ")


def _criteria(v: str) -> str:
    return ", ".join(c.replace("_", " ") for c in json.loads(v)) or NA


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, when=_when, reasons=_reasons, words=_words, criteria=_criteria,
                       day=lambda at: at.date().isoformat())  # fmt: skip
    return env


def _marks(alerts: list[dict[str, Any]]) -> dict[str, list[Mark]]:
    """The lab alerts to mark on each participant's panels (a withdrawn one is not: its
    evidence was corrected away)."""
    out: dict[str, list[Mark]] = {}
    for a in alerts:
        at = utc(a["raised_at"])
        if a["status"] == "withdrawn":
            continue
        if a["participant_id"] and at and a["rule_id"] in ALERT_PANEL:
            out.setdefault(a["participant_id"], []).append(Mark(at, a["rule_id"], a["severity"]))
    return out


def figures(o: Outcomes, alerts: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """The cohort figure and each participant's panels, as inline SVG. CPU-bound; one report
    draws at a time (matplotlib's settings are process-wide)."""
    with _DRAWING:
        return _figures(o, alerts)


_DRAWING = threading.Lock()


def _figures(o: Outcomes, alerts: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    marks = _marks(alerts)
    cohort = cohort_figure([m for m in o.measures if m.measure in ("egfr", "creatinine", "uacr")])
    baselines = {m.measure: m.baselines for m in o.measures}
    trajectories = [
        (
            pid,
            participant_figure(
                pid,
                o.series[pid],
                o.doses.get(pid),
                {measure: b.get(pid) for measure, b in baselines.items()},
                marks.get(pid, []),
            ),
        )
        for pid in sorted(o.series)
    ]
    return cohort, trajectories


def render(
    o: Outcomes, seq: int, head: str, cohort: str, trajectories: list[tuple[str, str]]
) -> str:
    localities = sorted({source for source, _ in o.aes.by_locality})
    return environment().get_template("report.html.j2").render(
        o=o, seq=seq, head=head, cohort=cohort, trajectories=trajectories, sections=SECTIONS,
        measures=MEASURES, windows=PROTOCOL_WINDOWS, localities=localities,
    )  # fmt: skip


class WhichTrial(ValueError):
    """The trail holds several trials and none was named: a report is one trial's."""

    def __init__(self, held: list[str]) -> None:
        self.held = held
        super().__init__(f"the trail holds trials {', '.join(held)}: name one (trial_id)")


async def trial_outcomes(
    reader: AuditReader, now: datetime | None = None, trial_id: str | None = None
) -> tuple[Outcomes, list[dict[str, Any]]]:
    """One trial's numbers and alerts: `trial_id`, or the trail's only trial (WhichTrial if
    several). The report, and the API's tables, read them."""
    participants = await reader.table("rm_participants")
    held = trials(participants)
    if trial_id is None and len(held) > 1:
        raise WhichTrial(held)
    trial_id = trial_id or (held[0] if held else None)
    alerts = await reader.table("rm_alerts")
    o = outcomes(
        participants,
        await reader.table("rm_labs"),
        await reader.table("rm_aes"),
        alerts,
        now or datetime.now(UTC),
        trial_id,
        await reader.table("rm_dispositions"),
    )
    return o, alerts


async def render_report(
    reader: AuditReader, now: datetime | None = None, trial_id: str | None = None
) -> str:
    """One trial's report: `trial_id`, or the trail's only trial (WhichTrial if several)."""
    seq, head = await reader.head()
    o, alerts = await trial_outcomes(reader, now, trial_id)
    cohort, trajectories = await asyncio.to_thread(figures, o, alerts)
    return render(o, seq, head, cohort, trajectories)


def disposition_rows(o: Outcomes) -> list[dict[str, Any]]:
    """The participant flow as rows (the API's JSON and CSV): table, line, participants."""
    f = o.flow
    rows = [
        ("flow", "screen failures", f.screen_failures), ("flow", "enrolled", f.enrolled),
        ("flow", "injected", f.injected), ("flow", "on study", f.on_study),
        *(("flow", line.lower(), n) for line, n in f.ended), ("flow", "died", f.deaths),
        *(("on study at visit", v, n) for v, n in f.on_study_at.items()),
        *(("recorded", f"{d} | {term}", n) for d, term, n in f.recorded),
    ]  # fmt: skip
    return [{"table": t, "line": line, "participants": n} for t, line, n in rows]


SOC_COLUMNS = ("level", "soc", "term", "participants", "percent", "events", "grade_1",
               "grade_2", "grade_3", "grade_4", "grade_5", "serious", "related")  # fmt: skip


def soc_rows(o: Outcomes) -> list[dict[str, Any]]:
    """AEs by SOC and PT as rows (the API's JSON and CSV); uncoded ones by verbatim term."""
    t = o.soc

    def row(level: str, soc: str | None, term: Term) -> dict[str, Any]:
        pct = t.pct(term)
        return {
            "level": level, "soc": soc, "term": term.name,
            "participants": len(term.participants),
            "percent": None if pct is None else round(pct, 1), "events": term.events,
            **{f"grade_{g}": term.by_grade[g] for g in range(1, 6)},
            "serious": term.serious, "related": term.related,
        }  # fmt: skip

    out = []
    for soc, pts in t.socs:
        out.append(row("soc", soc.name, soc))
        out += [row("pt", soc.name, pt) for pt in pts]
    return out + [row("not coded", None, term) for term in t.not_coded]
