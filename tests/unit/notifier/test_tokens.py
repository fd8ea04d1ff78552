"""Acknowledge links: signed, expiring, single-purpose; webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.domain.tokens import BadToken, ack_token, check_ack_token, signature

SECRET = b"s" * 32
NOW = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


def test_a_link_acknowledges_its_alert_for_its_recipient_until_it_expires() -> None:
    token = ack_token(SECRET, "a-1", "safety-officer", NOW + timedelta(hours=72))
    grant = check_ack_token(SECRET, token, NOW + timedelta(hours=71))
    assert (grant.alert_id, grant.recipient) == ("a-1", "safety-officer")
    with pytest.raises(BadToken, match="expired"):
        check_ack_token(SECRET, token, NOW + timedelta(hours=72))


def test_an_altered_or_foreign_token_is_refused() -> None:
    token = ack_token(SECRET, "a-1", "safety-officer", NOW + timedelta(hours=1))
    _, sig = token.split(".")
    other = ack_token(SECRET, "a-2", "safety-officer", NOW + timedelta(hours=1)).split(".")[0]
    with pytest.raises(BadToken, match="signature"):
        check_ack_token(SECRET, f"{other}.{sig}", NOW)  # another alert's body, this signature
    with pytest.raises(BadToken, match="signature"):
        check_ack_token(b"x" * 32, token, NOW)
    with pytest.raises(BadToken, match="malformed"):
        check_ack_token(SECRET, "nonsense", NOW)


def test_a_webhook_signature_is_the_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"alerts":[]}'
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert signature(SECRET, body) == f"sha256={expected}"


def test_a_session_cookie_cannot_acknowledge_and_a_link_cannot_log_in() -> None:
    from services.notifier.domain.tokens import check_session_token, session_token

    tokens = {"officer-token": "safety-officer"}
    session = session_token(SECRET, "safety-officer", "officer-token", NOW + timedelta(hours=8))
    assert check_session_token(SECRET, session, NOW, tokens) == "safety-officer"
    with pytest.raises(BadToken, match="not a ack token"):
        check_ack_token(SECRET, session, NOW)
    link = ack_token(SECRET, "a-1", "safety-officer", NOW + timedelta(hours=1))
    with pytest.raises(BadToken, match="not a session token"):
        check_session_token(SECRET, link, NOW, tokens)


def test_a_session_dies_with_its_token() -> None:
    from services.notifier.domain.tokens import check_session_token, session_token

    session = session_token(SECRET, "safety-officer", "officer-token", NOW + timedelta(hours=8))
    with pytest.raises(BadToken, match="its token was revoked"):
        check_session_token(SECRET, session, NOW, {"new-token": "safety-officer"})
    with pytest.raises(BadToken, match="its token was revoked"):  # the token given to another
        check_session_token(SECRET, session, NOW, {"officer-token": "someone-else"})
