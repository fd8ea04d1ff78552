"""The DSMB report's first two tables, from the read models (pure): the participants' flow
through the trial (CONSORT style) with each visit's denominator, and AEs by MedDRA system organ
class and preferred term (DESIGN, "Participants' course" and "Coded terms (MedDRA)").

When a participant's schedule ended is `clinical.course`'s, as the rule engine reads it: the
earliest of their dispositions (a correction takes one out) and a fatal AE's death."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from clinical.course import death_date, on_study_for, schedule_end
from clinical.terms import is_fatal
from clinical.visits import PROTOCOL_WINDOWS
from contracts import AeOutcome, SeriousnessCriterion

Row = Mapping[str, Any]
ENDED_BY = {  # disposition -> the flow's line
    "completed": "Completed",
    "withdrew_consent": "Withdrew consent",
    "withdrawn_by_investigator": "Withdrawn by the investigator",
    "lost_to_follow_up": "Lost to follow-up",
    "died": "Died",
}
NOT_CODED = "Not coded"


def fatal(a: Row) -> bool:
    """An AE row of the read model that is a death (clinical.terms.is_fatal, on the row)."""
    return is_fatal(
        AeOutcome(a["outcome"]),
        int(a["grade"]),
        map(SeriousnessCriterion, json.loads(a["criteria"])),
    )


@dataclass(frozen=True)
class Ended:
    on: date
    how: str  # a disposition, or "died" for a fatal AE
    reason: str | None = None  # a withdrawal by the investigator's reason


def ends(dispositions: Sequence[Row], aes: Sequence[Row]) -> dict[str, Ended]:
    """Each participant whose schedule ended: when, and how (the earliest end decides)."""
    found: dict[str, list[Ended]] = defaultdict(list)
    for d in dispositions:
        if d["superseded_by"] is None and d["disposition"] not in ("on_study", "screen_failure"):
            on = date.fromisoformat(d["disposition_date"])
            found[d["participant_id"]].append(Ended(on, d["disposition"], d["withdrawal_reason"]))
    for a in aes:
        if fatal(a):
            died = death_date(a.get("end_date"), a["onset_date"])
            found[a["participant_id"]].append(Ended(died, "died"))
    out = {}
    for pid, all_ends in found.items():
        first = schedule_end(e.on for e in all_ends)
        # a death on the day of another end is the death
        out[pid] = min((e for e in all_ends if e.on == first), key=lambda e: e.how != "died")
    return out


@dataclass
class Flow:
    screen_failures: int
    enrolled: int
    injected: int
    on_study: int
    ended: list[tuple[str, int]]  # (line, participants): completed, discontinued by reason, died
    recorded: list[tuple[str, str, int]]  # (disposition, source term as given, dispositions)
    on_study_at: dict[str, int]  # visit -> injected participants still on study at its window
    deaths: int  # participants who died, whatever ended their schedule first


def flow(
    participants: Sequence[Row],
    dispositions: Sequence[Row],
    aes: Sequence[Row],
    windows: Mapping[str, tuple[int, int]] = PROTOCOL_WINDOWS,
) -> Flow:
    enrolled = {p["participant_id"]: p for p in participants if p["enrolled_at"] is not None}
    current = [d for d in dispositions if d["superseded_by"] is None]
    screened_out = {
        d["participant_id"]
        for d in current
        if d["disposition"] == "screen_failure" and d["participant_id"] not in enrolled
    }
    ended = {pid: e for pid, e in ends(current, aes).items() if pid in enrolled}
    lines: Counter[str] = Counter()
    for e in ended.values():
        line = ENDED_BY.get(e.how, e.how)
        if e.how == "withdrawn_by_investigator":
            line += f": {(e.reason or 'no reason').replace('_', ' ')}"
        lines[line] += 1
    order = list(ENDED_BY.values())
    injected = {pid: p for pid, p in enrolled.items() if p["dose_on"] is not None}

    def end_day(pid: str) -> int | None:
        e = ended.get(pid)
        return None if e is None else (e.on - date.fromisoformat(injected[pid]["dose_on"])).days

    died = {a["participant_id"] for a in aes if fatal(a) and a["participant_id"] in enrolled}
    died |= {d["participant_id"] for d in current if d["disposition"] == "died"}
    recorded = Counter((d["disposition"], d["source_term"] or d["disposition"]) for d in current)
    return Flow(
        screen_failures=len(screened_out),
        enrolled=len(enrolled),
        injected=len(injected),
        on_study=len(enrolled) - len(ended),
        ended=sorted(lines.items(), key=lambda kv: (order.index(kv[0].split(":")[0]), kv[0])),
        recorded=sorted((k[0], k[1], n) for k, n in recorded.items()),
        on_study_at={
            v: sum(1 for pid in injected if on_study_for(v, end_day(pid), windows)) for v in windows
        },
        deaths=len(died),
    )


@dataclass
class Term:
    """One SOC or PT line: participants with at least one, events, and the events by grade,
    seriousness and relatedness."""

    name: str
    participants: set[str] = field(default_factory=set)
    events: int = 0
    by_grade: Counter[int] = field(default_factory=Counter)
    serious: int = 0
    related: int = 0

    def add(self, a: Row) -> None:
        self.participants.add(a["participant_id"])
        self.events += 1
        self.by_grade[int(a["grade"])] += 1
        self.serious += bool(a["serious"])
        self.related += bool(a["related"])


@dataclass
class SocTable:
    enrolled: int
    socs: list[tuple[Term, list[Term]]]  # each SOC with its PTs, most participants first
    not_coded: list[Term]  # uncoded AEs by verbatim term
    version: list[str]  # the MedDRA versions the coding names

    def pct(self, t: Term) -> float | None:
        return 100 * len(t.participants) / self.enrolled if self.enrolled else None


def soc_pt(participants: Sequence[Row], aes: Sequence[Row]) -> SocTable:
    """AEs of enrolled participants by SOC and PT as coded; AEs with no PT apart, by verbatim
    term. Nothing is looked up: a PT without its SOC stands under "SOC not given"."""
    enrolled = {p["participant_id"] for p in participants if p["enrolled_at"] is not None}
    socs: dict[str, Term] = {}
    pts: dict[tuple[str, str], Term] = {}
    uncoded: dict[str, Term] = {}
    versions: set[str] = set()
    for a in aes:
        if a["participant_id"] not in enrolled:
            continue
        coding = json.loads(a["meddra"]) if a.get("meddra") else {}
        if coding.get("version"):
            versions.add(coding["version"])
        pt = coding.get("pt")
        if not pt:
            uncoded.setdefault(a["term"], Term(a["term"])).add(a)
            continue
        soc = coding.get("soc") or "SOC not given"
        socs.setdefault(soc, Term(soc)).add(a)
        pts.setdefault((soc, pt), Term(pt)).add(a)

    def most(t: Term) -> tuple[int, int, str]:
        return (-len(t.participants), -t.events, t.name)

    return SocTable(
        enrolled=len(enrolled),
        socs=[
            (s, sorted((t for (soc, _), t in pts.items() if soc == s.name), key=most))
            for s in sorted(socs.values(), key=most)
        ],
        not_coded=sorted(uncoded.values(), key=most),
        version=sorted(versions),
    )
