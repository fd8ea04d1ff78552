from __future__ import annotations

import json

from contracts import CATALOG, EVENT_TYPES, export


def test_checked_in_schemas_and_asyncapi_match_the_models() -> None:
    assert export.stale() == [], "run `safety-monitor contracts export` and commit"


def test_there_is_one_schema_per_event_type() -> None:
    names = {p.stem for p in export.SCHEMA_DIR.glob("*.json")}
    assert names == set(EVENT_TYPES)


def test_a_schema_names_the_required_envelope_fields() -> None:
    schema = json.loads((export.SCHEMA_DIR / "lab.resulted.json").read_text())
    assert {"event_id", "trial_id", "participant_id", "occurred_at", "analyte", "value"} <= set(
        schema["required"]
    )


def test_every_event_type_lives_on_exactly_one_topic() -> None:
    homes = [t for topic in CATALOG for t in topic.event_types]
    assert sorted(homes) == sorted(EVENT_TYPES)


def test_the_system_of_record_is_kept_forever_and_dead_letters_30_days() -> None:
    by_name = {t.name: t for t in CATALOG}
    for name in ("trial.events", "safety.alerts", "safety.alert-lifecycle"):
        assert by_name[name].config["retention.ms"] == "-1"
    assert by_name["trial.dead-letter"].config["retention.ms"] == str(30 * 24 * 3600 * 1000)
