"""Signed, expiring, single-purpose acknowledge tokens (the link in a message) and webhook
signatures. Pure: the secret and the time are arguments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime


class BadToken(ValueError):
    """The token is not ours, was altered, is for another purpose, or has expired."""


@dataclass(frozen=True)
class AckGrant:
    alert_id: str
    recipient: str
    expires_at: datetime


def ack_token(secret: bytes, alert_id: str, recipient: str, expires_at: datetime) -> str:
    body = json.dumps(
        {"p": "ack", "a": alert_id, "r": recipient, "e": int(expires_at.timestamp())},
        separators=(",", ":"),
    ).encode()
    sig = hmac.new(secret, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(sig)}"


def check_ack_token(secret: bytes, token: str, now: datetime) -> AckGrant:
    try:
        body_part, sig_part = token.split(".")
        body, sig = _unb64(body_part), _unb64(sig_part)
    except ValueError:
        raise BadToken("malformed") from None
    if not hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), sig):
        raise BadToken("signature does not match")
    data = json.loads(body)
    if data.get("p") != "ack":
        raise BadToken("not an acknowledge token")
    expires = datetime.fromtimestamp(data["e"], tz=now.tzinfo)
    if now >= expires:
        raise BadToken("expired")
    return AckGrant(data["a"], data["r"], expires)


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Safety-Monitor-Signature` header: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError("not base64") from e
