"""The checkpoint signing key: from settings, or a key file created once (mode 0600)."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from services.audit.domain.chain import key_id
from services.audit.settings import AuditSettings


def signing_key(settings: AuditSettings) -> Ed25519PrivateKey:
    if settings.audit_signing_key is not None:
        return Ed25519PrivateKey.from_private_bytes(
            bytes.fromhex(settings.audit_signing_key.get_secret_value())
        )
    path = settings.audit_signing_key_file
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(raw.hex())
    return key


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def trusted_keys(settings: AuditSettings) -> dict[str, Ed25519PublicKey]:
    keys = [signing_key(settings).public_key()] + [
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(h))
        for h in settings.audit_trusted_public_keys
    ]
    return {key_id(k): k for k in keys}
