"""Settings of the notifier, from SAFETY_MONITOR_* environment variables (DESIGN, "The notifier's
interface")."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROUTES = Path(__file__).parent / "routes.yaml"
SECRET_MIN = 32  # characters; `python -c "import secrets; print(secrets.token_hex(32))"`


def development_secrets() -> dict[str, str]:
    """Fresh random secrets as environment entries, for the demo, the bench and the tests: a
    process started from them has secrets nobody else knows (and links that die with them)."""
    return {
        f"SAFETY_MONITOR_{name.upper()}": secrets.token_hex(32)
        for name in ("notifier_link_secret", "notifier_webhook_secret")
    }


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFETY_MONITOR_")

    kafka_bootstrap: str = "127.0.0.1:9092"
    notifier_host: str = "127.0.0.1"
    notifier_port: int = 8003
    notifier_routes: Path = ROUTES
    notifier_database_url: str = "sqlite+aiosqlite:///.local/notifier.db"
    notifier_public_url: str = "http://127.0.0.1:8003"
    notifier_smtp_host: str = "127.0.0.1"
    notifier_smtp_port: int = 1025
    notifier_smtp_user: str | None = None
    notifier_smtp_password: SecretStr | None = None
    notifier_smtp_starttls: bool = False
    notifier_smtp_from: str = "safety-monitor@trial.example"
    # Signs webhook bodies (HMAC-SHA256). Neither secret has a default: whoever knows the link
    # secret can forge an acknowledgement or a session on the live page. Each may instead be read
    # from a file (`..._FILE`, e.g. a compose or Kubernetes secret); `weak_secrets()` says what
    # is missing, and the notifier refuses to start with it.
    notifier_webhook_secret: SecretStr = SecretStr("")
    notifier_webhook_secret_file: Path | None = None
    # signs acknowledge links and live-page sessions; a new secret invalidates every link sent
    notifier_link_secret: SecretStr = SecretStr("")
    notifier_link_secret_file: Path | None = None
    notifier_link_ttl_hours: float = Field(72, gt=0)
    # bearer tokens for POST /alerts/{id}/ack and the live page: "name:token,name:token"
    notifier_api_tokens: SecretStr = SecretStr("")
    notifier_tick_s: float = Field(1.0, gt=0, description="How often the desk is consulted")
    notifier_retry_max_s: float = Field(300, gt=0)
    # failed tries of one channel after which the recipient's other channels send the alert
    # (and the live page says which failed); the channel itself is still tried
    notifier_channel_fail_after: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        for name in ("notifier_webhook_secret", "notifier_link_secret"):
            path = getattr(self, f"{name}_file")
            if path is not None and not getattr(self, name).get_secret_value():
                setattr(self, name, SecretStr(path.read_text().strip()))
        return self

    def weak_secrets(self) -> list[str]:
        """Why each secret cannot be used, naming its variable (empty: all can)."""
        out = []
        for name in ("notifier_link_secret", "notifier_webhook_secret"):
            value = getattr(self, name).get_secret_value()
            var = f"SAFETY_MONITOR_{name.upper()}"
            if not value:
                out.append(f"{var} is not set (nor {var}_FILE)")
            elif len(value) < SECRET_MIN or value.lower().startswith(("change-me", "changeme")):
                out.append(f"{var} is too weak: give at least {SECRET_MIN} random characters")
        return out

    def tokens(self) -> dict[str, str]:
        """token -> who holds it."""
        pairs = [p for p in self.notifier_api_tokens.get_secret_value().split(",") if ":" in p]
        return {token.strip(): name.strip() for name, token in (p.split(":", 1) for p in pairs)}
