"""Importing files (CDISC SDTM .csv/.xpt): read rows, map, accept record by record, summarise.

A rejected row never stops the good ones; every rejected row is listed with its reason (the
summary counts them by reason and the report file lists each); importing the same file twice
adds nothing, because each record's event_id is derived from STUDYID, domain, USUBJID and SEQ.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.ingest.domain import sdtm
from services.ingest.domain.mapping import Rejection
from services.ingest.domain.policy import Principal
from services.ingest.service import Ingest, Outcome

CHUNK = 1000
# The order a trial's files must go in: a lab needs its participant's enrolment.
DOMAIN_ORDER = {"DM": 0, "EX": 1, "LB": 2, "AE": 3, "DS": 4}


@dataclass
class ImportSummary:
    source: str
    domain: str
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rejected_rows(self) -> int:
        return len({r.row for r in self.rejections})

    def reasons(self) -> Counter[str]:
        return Counter(f"{r.field}: {r.reason}" for r in self.rejections)

    def as_dict(self, limit: int = 200) -> dict[str, Any]:
        return {
            "source": self.source,
            "domain": self.domain,
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected_rows": self.rejected_rows,
            "rejected_by_reason": dict(self.reasons()),
            "notes": dict(self.notes),
            "seconds": round(self.seconds, 2),
            "rejections": [r.as_dict() for r in self.rejections[:limit]],
            "rejections_listed": min(limit, len(self.rejections)),
        }

    def render(self, top: int = 15) -> str:
        lines = [
            f"{self.source} ({self.domain}): {self.rows} rows in {self.seconds:.1f}s: "
            f"{self.accepted} accepted, {self.duplicates} already there, "
            f"{self.rejected_rows} rejected"
        ]
        for reason, n in self.reasons().most_common(top):
            lines.append(f"  rejected {n:>6}  {reason}")
        if len(self.reasons()) > top:
            lines.append(f"  ... and {len(self.reasons()) - top} more reasons (see the report)")
        for note, n in self.notes.most_common():
            lines.append(f"  note     {n:>6}  {note}")
        return "\n".join(lines)

    def write_report(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["row", "field", "reason"])
            out.writerows([r.row, r.field, r.reason] for r in self.rejections)


def _cell(value: Any) -> str:
    """A transport-file value as the text a CSV would hold (38, not 38.0; NaN is blank)."""
    if value is None:
        return ""
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def read_rows(name: str, data: bytes) -> list[dict[str, str]]:
    """The rows of a CSV (UTF-8, a BOM allowed) or a SAS transport (.xpt) file, as text.
    A file that cannot be read is a ValueError naming it, never a crash."""
    if name.lower().endswith(".xpt"):
        import pyreadstat

        try:
            columns, _ = pyreadstat.read_xport(io.BytesIO(data), output_format="dict")
        except Exception as e:  # pyreadstat raises several types of its own for a bad file
            raise ValueError(f"{name}: not a readable SAS transport file ({e})") from None
        names = list(columns)
        count = len(columns[names[0]]) if names else 0
        return [{n: _cell(columns[n][i]) for n in names} for i in range(count)]
    try:
        text = data.decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [{k: v or "" for k, v in row.items() if k} for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{name}: not a readable CSV ({e})") from None


def _chunks(rows: list[dict[str, str]], size: int) -> Iterator[tuple[int, list[dict[str, str]]]]:
    for start in range(0, len(rows), size):
        yield start, rows[start : start + size]


async def import_sdtm(
    name: str,
    data: bytes,
    ingest: Ingest,
    who: Principal,
    zone: tzinfo,
    *,
    domain: str | None = None,
    progress: bool = False,
) -> ImportSummary:
    started = time.perf_counter()
    rows = read_rows(name, data)
    found = domain or sdtm.domain_of(name, rows[0] if rows else None)
    if found is None:
        raise ValueError(
            f"{name}: cannot tell the SDTM domain (no DOMAIN column, and the file name is not "
            f"one of {', '.join(sdtm.SUPPORTED)})"
        )
    summary = ImportSummary(name, found, rows=len(rows))
    bar = tqdm(
        total=len(rows),
        unit="row",
        desc=f"{Path(name).name} ({found})",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5,
    )
    try:
        for start, chunk in _chunks(rows, CHUNK):
            mapped = sdtm.map_rows(found, chunk, zone, first_row=start + 1)
            results, rejections = await ingest.accept_each(mapped.events, who, "sdtm")
            summary.rejections += mapped.rejections + rejections
            summary.notes.update(n.note for n in mapped.notes)
            summary.accepted += sum(r.outcome is Outcome.ACCEPTED for r in results)
            summary.duplicates += sum(r.outcome is Outcome.DUPLICATE for r in results)
            bar.update(len(chunk))
    finally:
        bar.close()
    summary.rejections.sort(key=lambda r: int(r.row.split()[1]))
    summary.seconds = time.perf_counter() - started
    return summary


def in_domain_order(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: DOMAIN_ORDER.get(p.stem.upper(), 9))
