"""The demo's story (services/sample.story): every safety rule fires at least once, each where
the story says, and the trial course is the protocol's (baseline, injection, M1-M12)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.safety_rules.evaluate import run
from services.safety_rules.rules_config import load_rules
from services.sample import story

TODAY = datetime(2026, 11, 26, tzinfo=UTC)  # every window of the story has closed by then


def test_every_rule_fires_where_the_story_says() -> None:
    chapters = story()
    assert [c.title.split(" ")[0] for c in chapters] == [
        "Screening", "The", "M1", "M3", "M6", "M9", "M12",
    ]  # fmt: skip
    rules = load_rules()
    so_far: list = []  # type: ignore[type-arg]
    first_at: dict[tuple[str | None, str], str] = {}
    for chapter in chapters:
        so_far += chapter.events
        for a in run(so_far, rules, as_of=None):
            if a.rule_id != "visit.overdue":
                first_at.setdefault((a.participant_id, a.rule_id), chapter.title.split(" ")[0])
    for (pid, rule), where in first_at.items():
        chapter = next(c for c in chapters if c.title.startswith(where))
        assert rule in chapter.watch, (pid, rule, where)  # announced where it happens
    final = run(so_far, rules, as_of=TODAY)
    assert {a.rule_id for a in final} == set(rules.enabled_rules)  # all 15
    overdue = [
        (a.participant_id, a.thresholds["visit"]) for a in final if a.rule_id == "visit.overdue"
    ]
    assert overdue == [("DN-001", "M9")]  # the one missed visit, and no other
    assert len({e.participant_id for c in chapters for e in c.events}) == 10
