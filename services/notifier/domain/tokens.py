"""Signed, expiring, single-purpose tokens (the acknowledge link in a message, the live page's
session) and webhook signatures. Pure: the secret and the time are arguments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class BadToken(ValueError):
    """The token is not ours, was altered, is for another purpose, or has expired."""


@dataclass(frozen=True)
class AckGrant:
    alert_id: str
    recipient: str
    expires_at: datetime


def ack_token(secret: bytes, alert_id: str, recipient: str, expires_at: datetime) -> str:
    return _seal(secret, "ack", expires_at, a=alert_id, r=recipient)


def check_ack_token(secret: bytes, token: str, now: datetime) -> AckGrant:
    data = _open(secret, token, "ack", now)
    return AckGrant(data["a"], data["r"], datetime.fromtimestamp(data["e"], tz=now.tzinfo))


def fingerprint(token: str) -> str:
    """What a session keeps of the token it was opened with (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def session_token(secret: bytes, who: str, token: str, expires_at: datetime) -> str:
    """The live page's login cookie: who, with which token, until when (never usable as an
    acknowledge link). It dies with its token (`check_session_token` is given those valid)."""
    return _seal(secret, "session", expires_at, w=who, t=fingerprint(token))


def check_session_token(secret: bytes, cookie: str, now: datetime, tokens: dict[str, str]) -> str:
    """Who holds the session `cookie`, while the token it was opened with is still among
    `tokens` (token -> who) for the same person; BadToken otherwise."""
    data = _open(secret, cookie, "session", now)
    holders = {fingerprint(t): who for t, who in tokens.items()}
    if holders.get(data.get("t", "")) != data["w"]:
        raise BadToken("its token was revoked")
    return str(data["w"])


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Safety-Monitor-Signature` header: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _seal(secret: bytes, purpose: str, expires_at: datetime, **fields: str) -> str:
    data = {"p": purpose, "e": int(expires_at.timestamp()), **fields}
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(body)}.{_b64(hmac.new(secret, body, hashlib.sha256).digest())}"


def _open(secret: bytes, token: str, purpose: str, now: datetime) -> dict[str, Any]:
    try:
        body_part, sig_part = token.split(".")
        body, sig = _unb64(body_part), _unb64(sig_part)
    except ValueError:
        raise BadToken("malformed") from None
    if not hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), sig):
        raise BadToken("signature does not match")
    data: dict[str, Any] = json.loads(body)
    if data.get("p") != purpose:
        raise BadToken(f"not a {purpose} token")
    if now.timestamp() >= data["e"]:
        raise BadToken("expired")
    return data


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError("not base64") from e
