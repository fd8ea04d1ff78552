"""Settings of the safety rules worker, from SAFETY_MONITOR_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RulesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFETY_MONITOR_")

    kafka_bootstrap: str = "127.0.0.1:9092"
    rules_app_id: str = "safety-rules"
    rules_file: Path | None = None
    rules_tick_seconds: float = Field(60.0, gt=0, description="How often time-based rules run")
    rules_data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".local/safety-rules")
    rules_web_port: int = 8002
    rules_web_bind: str = "127.0.0.1"
    rules_web_enabled: bool = True
    partitions: int = 12
    # How long the group waits for a worker that died before giving its partitions to another:
    # the bound on how late alerts are after a crash. faust's default is 60 s.
    rules_session_timeout_s: float = Field(30.0, ge=6, le=300)
