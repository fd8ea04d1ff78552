"""The DSMB report's figures, drawn by matplotlib as inline SVG (text kept as text, so a reader
can search it and a test can read every title and axis label).

Only the object API is used (`Figure`, no pyplot state), so figures can be drawn off the event
loop. Each SVG gets its own id salt: several inlined in one page never share an element id.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from clinical.visits import PROTOCOL_WINDOWS
from services.audit.domain.outcomes import MEASURES, FirstDose, MeasureOutcome, Sample

rcParams["svg.fonttype"] = "none"  # text as <text>, not paths
rcParams["font.family"] = ["DejaVu Sans", "sans-serif"]
rcParams["font.size"] = 8

PANELS = ("egfr", "creatinine", "uacr")
# which panel an alert is marked on
ALERT_PANEL = {
    "egfr.decline": "egfr",
    "egfr.kidney_failure": "egfr",
    "egfr.rapid_slope": "egfr",
    "lab.egfr_mismatch": "egfr",
    "creatinine.aki": "creatinine",
    "uacr.rise": "uacr",
}
LINE, THRESHOLD, BASELINE, ALERT = "#1f4e99", "#8a8a8a", "#2f8f2f", "#c0181c"


@dataclass(frozen=True)
class Mark:
    """An alert to mark on a participant's panel: at its trigger's clinical time."""

    at: datetime
    rule_id: str
    severity: str


def _svg(fig: Figure, salt: str) -> str:
    rcParams["svg.hashsalt"] = salt
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # the XML prolog and doctype do not belong inline


def _thresholds(measure: str, base: Sample | None) -> list[tuple[float, str]]:
    """The lines worth drawing on a panel: KDIGO categories, and the AKI stages from baseline."""
    if measure == "egfr":
        return [(90, "G1 ≥90"), (60, "G2/G3a 60"), (45, "G3b 45"), (30, "G4 30"),
                (15, "G5 <15, kidney failure")]  # fmt: skip
    if measure == "uacr":
        return [(30, "A2 ≥30"), (300, "A3 >300")]
    if measure == "creatinine":
        out = [(4.0, "AKI stage 3, 4.0 mg/dL")]
        if base is not None and not base.censored:
            out += [(1.5 * base.value, "AKI stage 1, 1.5x baseline"),
                    (2.0 * base.value, "stage 2, 2x")]  # fmt: skip
        return out
    return []


def _panel(
    ax: Axes,
    pid: str,
    measure: str,
    points: Sequence[Sample],
    dose: FirstDose | None,
    base: Sample | None,
    marks: Sequence[Mark],
) -> None:
    label, unit = MEASURES[measure]
    ax.set_title(f"{pid}: {label}", fontsize=9, loc="left")
    ax.set_xlabel("Study day (days from the injection)" if dose else "Days from first result")
    ax.set_ylabel(f"{label.split(',')[0]} ({unit})")
    if not points:
        ax.text(0.5, 0.5, "no result", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    zero = dose or FirstDose(points[0].at, points[0].sample_date or points[0].at.date())

    def x(p: Sample) -> int:
        return p.day(zero)

    exact = [p for p in points if not p.censored]
    ax.plot([x(p) for p in exact], [p.value for p in exact], "o-", color=LINE, ms=3.5, lw=1.4,
            label="result")  # fmt: skip
    censored = [p for p in points if p.censored]
    if censored:
        ax.plot([x(p) for p in censored], [p.value for p in censored], "o", mfc="white",
                color=LINE, ms=5, label="censored (bound shown)")  # fmt: skip
        for p in censored:
            ax.annotate(p.text, (x(p), p.value), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)  # fmt: skip
    values = [p.value for p in points] + ([base.value] if base else [])
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.15, abs(hi) * 0.1, 1e-3)
    lo, hi = max(lo - pad, 0), hi + pad
    if base is not None:
        ax.axhline(base.value, color=BASELINE, ls="--", lw=1, label=f"baseline {base.text}")
    for y, name in _thresholds(measure, base):
        if lo <= y <= hi:
            ax.axhline(y, color=THRESHOLD, ls=":", lw=0.9)
            ax.annotate(name, (1, y), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=6.5, color="#555")  # fmt: skip
    if dose is not None:
        for visit, (target, _) in PROTOCOL_WINDOWS.items():
            ax.axvline(target, color="#dddddd", lw=0.6, zorder=0)
            ax.annotate(visit, (target, 0), xycoords=("data", "axes fraction"), ha="center",
                        va="bottom", fontsize=6, color="#999")  # fmt: skip
    shown = set()
    for m in marks:
        nearest = min(points, key=lambda p: abs((p.at - m.at).total_seconds()))
        legend = None if m.rule_id in shown else f"alert: {m.rule_id} ({m.severity})"
        ax.plot([x(nearest)], [nearest.value], "v", color=ALERT, ms=8, label=legend)
        shown.add(m.rule_id)
    ax.set_ylim(lo, hi)
    ax.grid(axis="y", color="#eeeeee", lw=0.6)
    ax.legend(fontsize=6.5, loc="best", framealpha=0.8)


def participant_figure(
    pid: str,
    series: Mapping[str, Sequence[Sample]],
    dose: FirstDose | None,
    baselines: Mapping[str, Sample | None],
    marks: Sequence[Mark],
    rules: Mapping[str, str] = ALERT_PANEL,
) -> str:
    """One participant's eGFR, creatinine and UACR side by side, as inline SVG."""
    fig = Figure(figsize=(11, 2.9))
    # fixed margins: a constrained layout would draw every figure twice more (2x the time)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(PANELS))
    for ax, measure in zip(axes, PANELS, strict=True):
        mine = [m for m in marks if rules.get(m.rule_id) == measure]
        _panel(ax, pid, measure, series.get(measure, []), dose, baselines.get(measure), mine)
    return _svg(fig, f"participant-{pid}")


def cohort_figure(outcomes: Sequence[MeasureOutcome]) -> str:
    """Change from baseline by visit: the mean (line) and the interquartile range (band), with
    n under each visit."""
    fig = Figure(figsize=(11, 3.2))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.2, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(outcomes))
    for ax, out in zip(axes, outcomes, strict=True):
        label, unit = MEASURES[out.measure]
        ax.set_title(f"{label}: change from baseline", fontsize=9, loc="left")
        ax.set_xlabel("Visit (target study day)")
        ax.set_ylabel(f"Change from baseline ({unit})")
        ax.axhline(0, color=THRESHOLD, lw=0.8)
        days, means, q1s, q3s, ns = [], [], [], [], []
        for visit, cell in out.cells.items():
            s = cell.summary
            if s.n and s.mean is not None and s.q1 is not None and s.q3 is not None:
                days.append(PROTOCOL_WINDOWS[visit][0])
                means.append(s.mean)
                q1s.append(s.q1)
                q3s.append(s.q3)
                ns.append(s.n)
        ax.set_xticks([d for d, _ in PROTOCOL_WINDOWS.values()],
                      [f"{v}\n({d})" for v, (d, _) in PROTOCOL_WINDOWS.items()])  # fmt: skip
        if not days:
            ax.text(0.5, 0.5, "no change from baseline yet", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            continue
        ax.fill_between(days, q1s, q3s, color=LINE, alpha=0.18, lw=0, label="IQR")
        ax.plot(days, means, "o-", color=LINE, ms=4, lw=1.5, label="mean")
        for d, mean, n in zip(days, means, ns, strict=True):
            ax.annotate(f"n={n}", (d, mean), textcoords="offset points", xytext=(0, -12),
                        ha="center", fontsize=6.5)  # fmt: skip
        ax.grid(axis="y", color="#eeeeee", lw=0.6)
        ax.legend(fontsize=6.5, loc="best")
    return _svg(fig, "cohort")
