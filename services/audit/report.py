"""The DSMB report: self-contained HTML (inline CSS and SVG plots) that prints well, built around
the trial's registered outcome measures and tied to the exact audit-chain head it was read from.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from clinical.age import age_on
from clinical.baseline import choose_baseline
from clinical.egfr import ckd_epi_2021, reported_egfr_stands
from clinical.kdigo import a_category, g_category
from contracts import Sex
from services.audit.adapters.store import AuditReader
from services.audit.domain.stats import Summary, summarise

VISITS = ("M1", "M3", "M6", "M9", "M12")
NA = "-"
MEASURES = (
    ("egfr", "eGFR, CKD-EPI 2021 (mL/min/1.73 m²)"),
    ("creatinine", "Serum creatinine (mg/dL)"),
    ("uacr", "UACR (mg/g)"),
    ("tnf_alpha", "TNF-alpha (pg/mL)"),
    ("il_10", "IL-10 (pg/mL)"),
)
CSS = """
body{font:13px/1.45 system-ui,sans-serif;margin:24px;color:#111}h1{font-size:20px}
h2{font-size:16px;margin-top:28px;border-bottom:1px solid #999}table{border-collapse:collapse;
margin:8px 0}td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}.meta{color:#444}.plot{display:inline-block;
margin:4px 12px 4px 0}svg{border:1px solid #ccc;background:#fff}
@media print{body{margin:10mm}h2{page-break-after:avoid}table,.plot{page-break-inside:avoid}}
"""


def _utc(v: Any) -> datetime | None:
    if v is None:
        return None
    at: datetime = datetime.fromisoformat(v) if isinstance(v, str) else v
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _fmt(x: float | None, digits: int = 2) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else "0"


class Sample(NamedTuple):
    at: datetime
    value: float
    visit: str | None


def _day(v: Any) -> date | None:
    return date.fromisoformat(v) if v else None


def _age(p: dict[str, Any], lab: dict[str, Any], at: datetime) -> int | None:
    """Whole years at the sample's date at the site (clinical.age), as the engine counts them."""
    enrolled = _utc(p["enrolled_at"])
    return age_on(
        _day(lab.get("sample_date")) or at.date(),
        birth_date=_day(p["birth_date"]),
        age_at_enrolment=p["age_years"],
        enrolled_on=_day(p.get("enrolled_on")) or (enrolled.date() if enrolled else None),
    )


def lab_series(
    participants: dict[str, dict[str, Any]], labs: list[dict[str, Any]]
) -> dict[str, dict[str, list[Sample]]]:
    """participant -> measure -> samples in time order. `egfr_computed` is the eGFR time line the
    rules read: CKD-EPI 2021 from each creatinine, and a reported eGFR where no creatinine was
    taken in the day before it (clinical.egfr)."""
    out: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    creatinine: dict[str, list[datetime]] = defaultdict(list)  # every sample, censored or not
    for lab in labs:
        pid, at = lab["participant_id"], _utc(lab["occurred_at"])
        assert at is not None
        if lab["analyte"] == "creatinine" and not lab["superseded_by"]:
            creatinine[pid].append(at)
        if lab["superseded_by"] or lab["comparator"]:
            continue  # corrected values and censored ones are not summarised
        out[pid][lab["analyte"]].append(Sample(at, float(lab["value"]), lab["visit"]))
        p = participants.get(pid)
        if lab["analyte"] == "creatinine" and p and p["sex"]:
            age = _age(p, lab, at)
            if age is not None:
                egfr = ckd_epi_2021(float(lab["value"]), age, Sex(p["sex"]))
                out[pid]["egfr_computed"].append(Sample(at, egfr, lab["visit"]))
    for pid, measures in out.items():
        for points in measures.values():
            points.sort(key=lambda x: x.at)
        for r in measures.get("egfr", []):
            latest = max((t for t in creatinine[pid] if t <= r.at), default=None)
            if reported_egfr_stands(r.at, latest):
                measures["egfr_computed"].append(r)
        measures["egfr_computed"].sort(key=lambda x: x.at)
    return out


def _baseline(points: list[Sample], dose: datetime | None) -> float | None:
    chosen = choose_baseline(points, dose)
    return chosen.value if chosen else None


def _at_visit(points: list[Sample], visit: str) -> float | None:
    values = [v for _, v, vis in points if vis == visit]
    return values[-1] if values else None


def _svg(
    title: str, lines: dict[str, list[tuple[float, float]]], w: int = 340, h: int = 200
) -> str:
    pts = [p for line in lines.values() for p in line]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return 40 + (x - x0) / (x1 - x0) * (w - 55)

    def sy(y: float) -> float:
        return h - 25 - (y - y0) / (y1 - y0) * (h - 45)

    palette = (
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#17becf",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
    )
    body = [
        f'<text x="{w / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
        f'<text x="4" y="{sy(y1) + 4:.0f}" font-size="10">{y1:.3g}</text>',
        f'<text x="4" y="{sy(y0) + 4:.0f}" font-size="10">{y0:.3g}</text>',
        f'<text x="{w - 10}" y="{h - 6}" text-anchor="end" font-size="10">days from dose</text>',
    ]
    for i, (name, line) in enumerate(sorted(lines.items())):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        color = palette[i % len(palette)]
        body.append(
            f'<polyline class="trajectory" fill="none" stroke="{color}" stroke-width="1.5" '
            f'points="{coords}"><title>{html.escape(name)}</title></polyline>'
        )
    return f'<div class="plot"><svg role="img" width="{w}" height="{h}">{"".join(body)}</svg></div>'


async def render_report(reader: AuditReader, now: datetime | None = None) -> str:
    generated = now or datetime.now(UTC)
    seq, head = await reader.head()
    participants = {p["participant_id"]: p for p in await reader.table("rm_participants")}
    enrolled = [p for p in participants.values() if p["enrolled_at"] is not None]
    n = len(enrolled)
    aes = await reader.table("rm_aes")
    alerts = await reader.table("rm_alerts")
    series = lab_series(participants, await reader.table("rm_labs"))
    parts: list[str] = []

    # -- primary outcome: AEs and SAEs ------------------------------------------------------------
    def who(pred: Any) -> int:
        return len({a["participant_id"] for a in aes if pred(a)})

    rows: list[list[Any]] = [
        ["Any AE", _pct(who(lambda a: True), n)],
        ["Any SAE", _pct(who(lambda a: a["serious"]), n)],
        ["Any local AE", _pct(who(lambda a: a["locality"] == "local"), n)],
        ["Any systemic AE", _pct(who(lambda a: a["locality"] == "systemic"), n)],
        ["AE with locality not recorded", _pct(who(lambda a: a["locality"] is None), n)],
        ["Any related AE (possible or stronger)", _pct(who(lambda a: a["related"]), n)],
    ]
    parts.append("<h2>Primary outcome: adverse events, baseline to 12 months</h2>")
    parts.append(f"<p>Participants enrolled: <b>{n}</b>. Participants with at least one:</p>")
    parts.append(_table(["", "participants n (%)"], rows))
    by_grade = Counter((a["grade"], a["serious"], a["related"]) for a in aes)
    parts.append("<h3>AEs by CTCAE grade, seriousness and relatedness (events)</h3>")
    parts.append(
        _table(
            [
                "grade",
                "serious, related",
                "serious, not related",
                "non-serious, related",
                "non-serious, not related",
            ],
            [
                [
                    g,
                    by_grade[(g, True, True)],
                    by_grade[(g, True, False)],
                    by_grade[(g, False, True)],
                    by_grade[(g, False, False)],
                ]
                for g in range(1, 6)
            ],
        )
    )
    saes = sorted(
        (a for a in aes if a["serious"]), key=lambda a: (a["participant_id"], a["onset_date"])
    )
    parts.append("<h3>SAE listing</h3>")
    parts.append(
        _table(
            ["participant", "AE", "term", "onset", "grade", "criteria", "relatedness", "outcome"],
            [
                [
                    a["participant_id"],
                    a["ae_id"],
                    a["term"],
                    a["onset_date"],
                    a["grade"],
                    ", ".join(json.loads(a["criteria"])),
                    a["relatedness"],
                    a["outcome"],
                ]
                for a in saes
            ],
        )
        if saes
        else "<p>No SAE.</p>"
    )

    # -- secondary outcomes: change from baseline ---------------------------------------------
    parts.append("<h2>Secondary outcomes: change from baseline at months 1, 3, 6, 9, 12</h2>")
    for measure, label in MEASURES:
        key = "egfr_computed" if measure == "egfr" else measure
        changes: dict[str, list[float]] = defaultdict(list)
        per_participant = []
        for pid in sorted(participants):
            points = series.get(pid, {}).get(key, [])
            base = _baseline(points, _utc(participants[pid]["dose_at"]))
            row: list[Any] = [pid, _fmt(base)]
            for visit in VISITS:
                value = _at_visit(points, visit)
                if base is not None and value is not None:
                    changes[visit].append(value - base)
                    row.append(_fmt(value - base))
                else:
                    row.append(NA)
            if base is not None or any(c != NA for c in row[2:]):
                per_participant.append(row)
        summaries: list[tuple[str, Summary]] = [(v, summarise(changes[v])) for v in VISITS]
        parts.append(f"<h3>{html.escape(label)}</h3>")
        parts.append(
            _table(
                ["visit", "n", "mean", "SD", "median", "IQR"],
                [
                    [
                        v,
                        s.n,
                        _fmt(s.mean),
                        _fmt(s.sd),
                        _fmt(s.median),
                        f"{_fmt(s.q1)} to {_fmt(s.q3)}",
                    ]
                    for v, s in summaries
                ],
            )
        )
        if per_participant:
            parts.append(
                "<details><summary>per participant (baseline, change)</summary>"
                + _table(["participant", "baseline", *VISITS], per_participant)
                + "</details>"
            )

    # -- KDIGO shift tables -------------------------------------------------------------------
    def shift(key: str, cat: Any, names: list[str]) -> str:
        counts: Counter[tuple[str, str]] = Counter()
        for pid in participants:
            points = series.get(pid, {}).get(key, [])
            base = _baseline(points, _utc(participants[pid]["dose_at"]))
            if base is not None and points:
                counts[(cat(base), cat(points[-1][1]))] += 1
        return _table(
            ["baseline \\ last", *names],
            [[b, *(counts[(b, last)] for last in names)] for b in names],
        )

    parts.append("<h2>KDIGO shift tables (baseline vs last result)</h2><h3>eGFR category (G)</h3>")
    parts.append(shift("egfr_computed", g_category, ["G1", "G2", "G3a", "G3b", "G4", "G5"]))
    parts.append("<h3>Albuminuria category (A)</h3>")
    parts.append(shift("uacr", a_category, ["A1", "A2", "A3"]))

    # -- trajectories ------------------------------------------------------------------------
    parts.append("<h2>Trajectories</h2>")
    for key, title in (
        ("egfr_computed", "eGFR (CKD-EPI 2021)"),
        ("creatinine", "Creatinine mg/dL"),
        ("uacr", "UACR mg/g"),
    ):
        lines = {}
        for pid, measures in series.items():
            dose = _utc(participants.get(pid, {}).get("dose_at"))
            origin = dose or (measures[key][0][0] if measures.get(key) else None)
            if measures.get(key) and origin is not None:
                lines[pid] = [
                    ((t - origin).total_seconds() / 86400, v) for t, v, _ in measures[key]
                ]
        parts.append(_svg(title, lines))

    # -- alerts -------------------------------------------------------------------------------
    parts.append("<h2>Safety alerts</h2>")
    by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        by_rule[a["rule_id"] or "(lifecycle only)"].append(a)
    rows = []
    for rule, items in sorted(by_rule.items()):
        hours = [
            ((_utc(a["acknowledged_at"]) - _utc(a["raised_at"])).total_seconds() / 3600)  # type: ignore[operator]
            for a in items
            if a["acknowledged_at"] and a["raised_at"]
        ]
        severities = Counter(a["severity"] for a in items)
        rows.append(
            [
                rule,
                len(items),
                ", ".join(f"{k} {v}" for k, v in sorted(severities.items(), key=str)),
                sum(1 for a in items if a["acknowledged_at"]),
                _fmt(summarise(hours).median, 1) if hours else NA,
            ]
        )
    parts.append(
        _table(["rule", "alerts", "by severity", "acknowledged", "median hours to ack"], rows)
        if rows
        else "<p>No alert.</p>"
    )

    meta = (
        f"Data cut-off {generated.isoformat(timespec='seconds')}; built from audit-chain row "
        f"{seq}, head hash <code>{head}</code>. Verify the trail at /audit/verify."
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>DSMB report: UC-MSC in diabetic nephropathy</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>DSMB safety report: intra-renal UC-MSC in diabetic nephropathy</h1>"
        f"<p class=meta>{meta}</p>{''.join(parts)}<p class=meta>{meta}</p></body></html>"
    )
