"""The fault suite's workload: many participants, a few events each, many alerts; and its ground
truth from the offline engine (`evaluate`'s own `run_all`) over the very same events."""

from __future__ import annotations

import random

from contracts import AlertRaised, ClinicalEvent, encode
from services.safety_rules.evaluate import run_all
from services.safety_rules.rules_config import load_rules
from tests.unit.safety_rules.builders import a_participant

TIME_BASED = {"visit.overdue"}  # the workers run no ticks in the suite: compared without them


def workload(prefix: str, participants: int, seed: int) -> list[ClinicalEvent]:
    """About 8 events per participant: enrolment, dose (1 in 8 off protocol), creatinine and
    UACR baselines and follow-ups (about a third rising), a visit, an AE (1 in 5 serious)."""
    rnd = random.Random(seed)
    events: list[ClinicalEvent] = []
    for n in range(participants):
        p = a_participant(f"{prefix}-{n:05d}")
        p.enrolled(sex=rnd.choice("MF"), age=rnd.randint(35, 75))
        p.dosed(cells_per_kg=rnd.choice([1e6] * 7 + [2e6]))
        base = round(rnd.uniform(0.8, 1.3), 2)
        p.baseline("creatinine", base).baseline("uacr", round(rnd.uniform(40, 250), 1))
        rise = rnd.random() < 0.35
        p.lab("creatinine", round(base * (rnd.uniform(1.5, 2.6) if rise else 1.02), 2), 30, "M1")
        p.visit("M1", 30)
        p.lab("uacr", round(rnd.uniform(20, 900), 1), 90, "M3")
        serious = rnd.random() < 0.2
        p.ae(
            day=rnd.randint(2, 60),
            serious=serious,
            ctcae_grade=rnd.choice([1, 2, 3, 3, 4]) if serious else rnd.choice([1, 2, 3]),
            relatedness=rnd.choice(["not_related", "possible", "probable", "not_assessed"]),
        )
        events += p.events()
    return events


def truth(events: list[ClinicalEvent]) -> dict[str, bytes | None]:
    """alert_id -> the bytes the engine gives it (None for trial-level alerts, whose wording
    depends on the order in which participants' partitions were read)."""
    out: dict[str, bytes | None] = {}
    for a in run_all(events, load_rules(None), None):
        if isinstance(a, AlertRaised) and a.rule_id not in TIME_BASED:
            out[str(a.alert_id)] = None if a.participant_id is None else _canonical(a)
    return out


def _canonical(a: AlertRaised) -> bytes:
    return encode(a)
