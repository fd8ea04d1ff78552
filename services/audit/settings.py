"""Settings of the audit projection and the DSMB API, from SAFETY_MONITOR_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFETY_MONITOR_")

    kafka_bootstrap: str = "127.0.0.1:9092"
    audit_database_url: str = "sqlite+aiosqlite:///.local/audit.db"
    # Ed25519 private key, 32 raw bytes in hex. Keep it outside the database: whoever holds it
    # can sign a rewritten chain. Without it, a key file is created at audit_signing_key_file.
    audit_signing_key: SecretStr | None = None
    audit_signing_key_file: Path = Path(".local/audit-signing.key")
    # Public keys (hex) trusted when verifying, beside the signing key's own.
    audit_trusted_public_keys: list[str] = Field(default_factory=list)
    # An append-only file (another disk, a WORM mount) that anchors each signed checkpoint,
    # beside the audit.checkpoints topic; `verify` reads both.
    audit_anchor_file: Path | None = None
    audit_checkpoint_every: int = Field(100, gt=0)
    audit_batch_max: int = Field(500, gt=0)
    audit_host: str = "127.0.0.1"
    audit_port: int = 8004
    # `audit project` serves /healthz, /readyz and /metrics here
    audit_projection_host: str = "127.0.0.1"
    audit_projection_port: int = 8005
    audit_lag_every_s: float = Field(5.0, gt=0, description="How often the lag is read")
    # How often the projection verifies the chain against its anchors (the
    # safety_monitor_audit_chain_verified gauge)
    audit_verify_every_s: float = Field(300.0, gt=0)
    # ... that is the newest segment (from the newest checkpoint anchored outside the database);
    # the whole chain is verified at start and this often
    audit_full_verify_every_s: float = Field(86400.0, gt=0)
