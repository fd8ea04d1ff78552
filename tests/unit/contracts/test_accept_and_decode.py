"""Accepting a fact (ingest) checks every bound; decoding a recorded fact (every consumer, a
replay) checks shape and types only, so a bound tightened later never turns history into dead
letters. Neither lets through a time that does not exist in UTC."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import InvalidEvent, decode, parse_event

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
WINDOW = (datetime(1900, 1, 1, tzinfo=UTC), NOW + timedelta(days=1))


def lab(**kw: Any) -> dict[str, Any]:
    return {
        "event_type": "lab.resulted",
        "event_id": str(uuid.uuid4()),
        "trial_id": "T",
        "participant_id": "DN-001",
        "occurred_at": "2026-11-20T08:00:00+07:00",
        "recorded_at": "2026-11-20T09:00:00Z",
        "recorded_by": "site:a/key:k",
        "source": "api",
        "analyte": "creatinine",
        "value": 1.2,
        "unit": "mg/dL",
        **kw,
    }


def fields(raw: Any, **kw: Any) -> set[str]:
    with pytest.raises(InvalidEvent) as e:
        parse_event(raw, **kw)
    return {err.field for err in e.value.errors}


def test_a_value_outside_todays_range_is_refused_at_the_door_but_decoded_on_replay() -> None:
    recorded = lab(value=95.0)  # accepted once under a wider range, now on the topic forever
    assert fields(recorded) == {"value"}
    assert decode(json.dumps(recorded)).value == 95.0  # type: ignore[union-attr]


def test_an_enrolment_age_and_weight_bound_bind_acceptance_only() -> None:
    enrolled = {
        **{k: v for k, v in lab().items() if k not in ("analyte", "value", "unit")},
        "event_type": "participant.enrolled",
        "sex": "F",
        "age_years": 130,
        "weight_kg": 400.0,
        "site_id": "a",
        "enrolled_at": "2026-11-01T00:00:00Z",
    }
    assert fields(enrolled) == {"age_years", "weight_kg"}
    event = decode(enrolled)
    assert (event.age_years, event.weight_kg) == (130, 400.0)  # type: ignore[union-attr]


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+05:00"])
def test_a_time_that_does_not_exist_in_utc_is_refused_by_both(at: str) -> None:
    assert fields(lab(occurred_at=at)) == {"occurred_at"}
    with pytest.raises(InvalidEvent) as e:
        decode(json.dumps(lab(occurred_at=at)))
    assert "UTC" in str(e.value)


def test_the_door_window_refuses_the_far_future_and_past_and_replay_ignores_it() -> None:
    assert fields(lab(occurred_at="2999-01-01T00:00:00Z"), window=WINDOW) == {"occurred_at"}
    assert fields(lab(occurred_at="1899-12-31T23:00:00Z"), window=WINDOW) == {"occurred_at"}
    assert parse_event(lab(), window=WINDOW).occurred_at.utcoffset() == timedelta(hours=7)
    assert decode(lab(occurred_at="2999-01-01T00:00:00Z")).occurred_at.year == 2999


def test_nan_and_infinity_are_not_numbers_anywhere() -> None:
    text = json.dumps(lab(original_value=1.2, original_unit="mg/dL")).replace(
        '"original_value": 1.2', '"original_value": NaN'
    )
    assert fields(text) == {"(body)"}
    assert fields(lab(original_value=float("inf"), original_unit="mg/dL")) == {"original_value"}
    with pytest.raises(InvalidEvent):
        decode(text)


def test_strings_are_bounded_at_the_door() -> None:
    assert fields(lab(original_value=1.2, original_unit="x" * 2_000_000)) == {"original_unit"}
    assert fields(lab(recorded_by="k" * 201)) == {"recorded_by"}
    assert fields(lab(supersedes=str(uuid.uuid4()), reason="r" * 2001)) == {"reason"}
