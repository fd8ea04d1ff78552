"""Settings of the notifier, from SAFETY_MONITOR_* environment variables (DESIGN, "The notifier's
interface")."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROUTES = Path(__file__).parent / "routes.yaml"


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
    notifier_webhook_secret: SecretStr = SecretStr("change-me-webhook-secret")
    # signs acknowledge links; a new secret invalidates every link already sent
    notifier_link_secret: SecretStr = SecretStr("change-me-link-secret")
    notifier_link_ttl_hours: float = Field(72, gt=0)
    # bearer tokens for POST /alerts/{id}/ack and the live page: "name:token,name:token"
    notifier_api_tokens: SecretStr = SecretStr("")
    notifier_tick_s: float = Field(1.0, gt=0, description="How often the desk is consulted")
    notifier_retry_max_s: float = Field(300, gt=0)

    def tokens(self) -> dict[str, str]:
        """token -> who holds it."""
        pairs = [p for p in self.notifier_api_tokens.get_secret_value().split(",") if ":" in p]
        return {token.strip(): name.strip() for name, token in (p.split(":", 1) for p in pairs)}
