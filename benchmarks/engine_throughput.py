"""Throughput and memory of the pure rule engine, offline (what `evaluate` and the worker run).

Prints events/s for trials of growing history length (the same number of events each), in
clinical order and with 10% of each participant's labs entered late, and the peak Python memory
(measured in a second pass: tracemalloc slows what it traces); writes
benchmarks/results/engine_throughput.json. The engine places each event at its clinical time
and re-checks only what it touches, so the cost per event should not grow with the history: the
ratio between the shortest and the longest history shows whether it does.

    .venv/bin/python benchmarks/engine_throughput.py
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts import ClinicalEvent, parse_event
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.evaluate import run

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def trial(participants: int, labs_per_participant: int) -> list[ClinicalEvent]:
    events: list[ClinicalEvent] = []
    for n in range(participants):
        pid = f"BM-{n:04d}"

        def ev(kind: str, i: int, day: float, n: int = n, pid: str = pid, **fields: object) -> None:
            at = T0 + timedelta(days=day)
            events.append(
                parse_event(
                    {  # type: ignore[arg-type]
                        "event_type": kind,
                        "event_id": f"00000000-0000-4000-8000-{n:06d}{i:06d}",
                        "trial_id": "BENCH",
                        "participant_id": pid,
                        "occurred_at": at.isoformat(),
                        "recorded_at": at.isoformat(),
                        "recorded_by": "bench",
                        "source": "test",
                        **fields,
                    }
                )
            )

        ev(
            "participant.enrolled",
            0,
            -10,
            sex="F",
            age_years=55,
            weight_kg=70,
            site_id="s",
            enrolled_at=(T0 - timedelta(days=10)).isoformat(),
        )
        ev("dose.administered", 1, 0, cells_total=70e6, weight_kg=70, lot="L")
        for i in range(labs_per_participant):
            analyte, value, unit = [
                ("creatinine", 1.2, "mg/dL"),
                ("uacr", 200.0, "mg/g"),
                ("egfr", 50.0, "mL/min/1.73m2"),
            ][i % 3]
            ev(
                "lab.resulted",
                2 + i,
                i * 3,
                analyte=analyte,
                value=value * (1 + (i % 5) / 100),
                unit=unit,
                visit="baseline" if i < 3 else None,
            )
    return events


def entered_late(events: list[ClinicalEvent], share: float) -> list[ClinicalEvent]:
    """Each participant's events with `share` of the labs entered at a random later place."""
    rng = random.Random(7)
    out: list[ClinicalEvent] = []
    for pid in dict.fromkeys(e.participant_id for e in events):
        mine = [e for e in events if e.participant_id == pid]
        labs = [i for i, e in enumerate(mine) if e.event_type == "lab.resulted"]
        for i in sorted(rng.sample(labs, int(len(labs) * share)), reverse=True):
            late = mine.pop(i)
            mine.insert(rng.randint(i, len(mine)), late)
        out += mine
    return out


def measure(participants: int, labs: int, late: float = 0.0, repeat: int = 3) -> dict[str, float]:
    events = trial(participants, labs)
    if late:
        events = entered_late(events, late)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        alerts = run(events, RulesConfig(), as_of=None)
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    run(events, RulesConfig(), as_of=None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "participants": participants,
        "labs_each": labs,
        "entered_late": late,
        "events": len(events),
        "alerts": len(alerts),
        "seconds": round(best, 3),
        "events_per_s": round(len(events) / best),
        "us_per_event": round(best / len(events) * 1e6, 1),
        "peak_mib": round(peak / 2**20, 1),
    }


def main() -> None:
    rows = [measure(400, 12), measure(100, 48), measure(20, 240)]
    rows += [measure(400, 12, late=0.1), measure(20, 240, late=0.1)]
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))
    ratio = rows[0]["events_per_s"] / rows[2]["events_per_s"]
    late_ratio = rows[3]["events_per_s"] / rows[4]["events_per_s"]
    print(f"throughput at 12 labs/participant vs 240: {ratio:.2f}x (10% late: {late_ratio:.2f}x)")
    out = Path(__file__).parent / "results" / "engine_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "runs": rows,
                "short_vs_long_history_ratio": round(ratio, 2),
                "short_vs_long_history_ratio_10pct_late": round(late_ratio, 2),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
