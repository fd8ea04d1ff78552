from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import EVENT_TYPES, InvalidEvent, LabResulted, encode, parse_event
from contracts.events import canonical_json
from services.sample import one_of_each


def a_lab(**overrides: Any) -> dict[str, Any]:
    lab: dict[str, Any] = {
        "event_type": "lab.resulted",
        "event_id": "5b0f2a3e-8a3c-4d6e-9a1b-2c3d4e5f6a7b",
        "trial_id": "UCMSC-DN-01",
        "participant_id": "DN-001",
        "occurred_at": "2026-02-01T08:30:00+07:00",
        "recorded_at": "2026-02-01T12:00:00+07:00",
        "recorded_by": "site:sardjito",
        "source": "api",
        "visit": "M1",
        "analyte": "creatinine",
        "value": 1.2,
        "unit": "mg/dL",
    }
    lab.update(overrides)
    return {k: v for k, v in lab.items() if v is not ...}


def refusal(raw: dict[str, Any] | str) -> dict[str, str]:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    return {e.field: e.reason for e in caught.value.errors}


def test_every_event_type_has_a_sample() -> None:
    assert {e.event_type for e in one_of_each()} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.event_type)
def test_every_event_survives_a_json_round_trip_unchanged(event: Any) -> None:
    again = parse_event(encode(event))
    assert again == event
    assert encode(again) == encode(event)


def test_events_are_flat_json_with_the_design_field_names() -> None:
    lab = json.loads(encode(parse_event(a_lab())))
    assert {"event_id", "event_type", "schema_version", "trial_id", "participant_id",
            "occurred_at", "recorded_at", "recorded_by", "source", "supersedes", "reason",
            "visit", "analyte", "value", "unit", "loinc"} <= set(lab)  # fmt: skip
    assert not any(isinstance(v, dict) for v in lab.values())


def test_events_are_frozen() -> None:
    lab = parse_event(a_lab())
    with pytest.raises(ValueError, match="frozen"):
        lab.value = 9.0  # type: ignore[misc,union-attr]


def test_missing_field_is_named() -> None:
    assert refusal(a_lab(analyte=...)) == {"analyte": "is required"}


def test_unknown_event_type_is_named_with_the_known_ones() -> None:
    errors = refusal(a_lab(event_type="lab.deleted"))
    assert "unknown event type 'lab.deleted'" in errors["event_type"]
    assert "lab.resulted" in errors["event_type"]


def test_unknown_unit_is_refused_not_guessed() -> None:
    errors = refusal(a_lab(unit="mmol/L"))
    assert set(errors) == {"unit"}
    assert "'mmol/L' is not accepted for creatinine" in errors["unit"]


def test_creatinine_of_95_mg_dl_is_outside_physiological_range() -> None:
    errors = refusal(a_lab(value=95))
    assert set(errors) == {"value"}
    assert "outside the physiological range" in errors["value"]


def test_negative_uacr_is_refused() -> None:
    errors = refusal(a_lab(analyte="uacr", value=-3, unit="mg/g"))
    assert "value" in errors and "outside the physiological range" in errors["value"]


@pytest.mark.parametrize("name", ["Jane Doe", "JaneDoe", "DN 001", " DN-001", "dn-001\t"])
def test_participant_id_that_looks_like_a_name_or_has_spaces_is_refused(name: str) -> None:
    errors = refusal(a_lab(participant_id=name))
    assert set(errors) == {"participant_id"}


@pytest.mark.parametrize("code", ["DN-001", "01-701-1015", "6d2a4f0e-1c3b-4a5d-8e9f-0a1b2c3d4e5f"])
def test_pseudonymous_codes_are_accepted(code: str) -> None:
    assert parse_event(a_lab(participant_id=code)).participant_id == code  # type: ignore[union-attr]


def test_wrong_type_is_named() -> None:
    assert set(refusal(a_lab(value="high"))) == {"value"}


def test_naive_timestamp_is_refused() -> None:
    errors = refusal(a_lab(occurred_at="2026-02-01T08:30:00"))
    assert "timezone" in errors["occurred_at"]


def test_unknown_field_is_refused() -> None:
    assert "extra_note" in refusal(a_lab(extra_note="x"))


def test_malformed_json_is_named() -> None:
    assert "not valid JSON" in refusal('{"event_type": ')["(body)"]


def test_creatinine_in_umol_per_l_is_stored_in_mg_per_dl_with_the_original_kept() -> None:
    lab = parse_event(a_lab(value=88.4, unit="µmol/L"))
    assert isinstance(lab, LabResulted)
    assert (lab.value, lab.unit) == (1.0, "mg/dL")
    assert (lab.original_value, lab.original_unit) == (88.4, "µmol/L")


def test_uacr_in_mg_per_mmol_is_stored_in_mg_per_g() -> None:
    lab = parse_event(a_lab(analyte="uacr", value=10, unit="mg/mmol"))
    assert isinstance(lab, LabResulted)
    assert lab.unit == "mg/g" and lab.value == pytest.approx(88.4)


def test_a_correction_must_give_a_reason() -> None:
    errors = refusal(a_lab(supersedes="9b0f2a3e-8a3c-4d6e-9a1b-2c3d4e5f6a7b"))
    assert "reason" in errors


def test_a_serious_flag_must_agree_with_the_criteria() -> None:
    ae = json.loads(encode(one_of_each()[4]))
    errors = refusal({**ae, "serious": False})
    assert "serious" in errors


def test_a_partial_onset_date_is_kept_as_partial() -> None:
    ae = json.loads(encode(one_of_each()[4]))
    assert parse_event({**ae, "onset_date": "2014-03"}).onset_date == "2014-03"  # type: ignore[union-attr]
    assert "onset_date" in refusal({**ae, "onset_date": "2014-13"})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _json_dumps(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@given(_JSON)
def test_the_canonical_bytes_are_json_dumps_sorted_compact_and_utf8(data: object) -> None:
    # every stored content hash and audit hash was computed over these bytes
    assert canonical_json(data) == _json_dumps(data)


@given(st.floats(min_value=1e-12, max_value=1e-2) | st.floats(min_value=1e15, max_value=1e23))
def test_floats_where_two_encoders_part_are_written_as_json_writes_them(x: float) -> None:
    # json writes 1e-05 where orjson writes 0.00001 or 1e-5; both write 0.0001 and 1e+16
    for value in (x, -x, [x], {"value": x}):
        assert canonical_json(value) == _json_dumps(value)


def test_the_values_at_the_edges_of_the_fast_encoder_are_written_as_json_writes_them() -> None:
    edges = [1e-4, 9.999999999999999e-05, 1e-05, 1.2668107126206719e-05, 1e-10, 1e16, 1e21]
    edges += [2**63, 2**64, -(2**63) - 1, float("nan"), float("inf"), -0.0, 5e-324]
    for value in edges:
        assert canonical_json({"v": value}) == _json_dumps({"v": value}), value
    assert canonical_json({"b": [1, 2.5, None, True], "a": "é\u2028\x00"}) == (
        '{"a":"é\u2028\\u0000","b":[1,2.5,null,true]}'.encode()
    )


@pytest.mark.parametrize("analyte", [[], {}, ["creatinine"]])
def test_an_analyte_that_is_not_a_string_is_refused_by_name_not_a_crash(analyte: object) -> None:
    # a list here once raised TypeError ("unhashable") out of the validator: a 500 at ingest
    assert "analyte" in refusal(a_lab(analyte=analyte))


@pytest.mark.parametrize("event_type", [[], {}, ["lab.resulted"]])
def test_an_event_type_that_is_not_a_string_is_refused_by_name_not_a_crash(
    event_type: object,
) -> None:
    assert "event_type" in refusal(a_lab(event_type=event_type))
