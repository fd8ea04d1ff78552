"""The ids every service derives from names: `contracts.alerts.uuid5` is uuid.uuid5, faster."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import alert_id_for
from contracts.alerts import ALERT_NAMESPACE, uuid5


@given(st.uuids(), st.text())
def test_uuid5_is_the_standard_librarys(namespace: uuid.UUID, name: str) -> None:
    ours = uuid5(namespace, name)
    assert ours == uuid.uuid5(namespace, name)
    assert (ours.version, ours.variant) == (5, uuid.RFC_4122)


def test_a_name_utf8_cannot_encode_is_refused_as_uuid5_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        uuid.uuid5(ALERT_NAMESPACE, "\ud800")
    with pytest.raises(UnicodeEncodeError):
        uuid5(ALERT_NAMESPACE, "\ud800")


def test_alert_ids_are_those_recorded_before() -> None:
    # an alert's id is its identity in the trail and in every replay: it must never change
    # (these were derived with uuid.uuid5, before this function)
    assert str(alert_id_for("sae.reported", "DN-001", "demo")) == (
        "8bfdcae3-95f8-5824-bd81-ca55ba21e0c1"
    )
    assert str(alert_id_for("trial.stopping_rule", None, "x")) == (
        "11968ee2-8fe3-5353-8ad7-4d0091eb9799"
    )
