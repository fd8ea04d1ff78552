"""Settings of the safety rules worker, from SAFETY_MONITOR_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topics import SAFETY_ALERTS, TRIAL_EVENTS


class RulesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFETY_MONITOR_")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # the consumer group: workers with one app id share the partitions (and one database)
    rules_app_id: str = "safety-rules"
    rules_file: Path | None = None
    rules_tick_seconds: float = Field(60.0, gt=0, description="How often time-based rules run")
    rules_data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".local/safety-rules")
    # participant state and consumed offsets; default: a SQLite file in RULES_DATA_DIR. Workers
    # on several machines share a PostgreSQL database (postgresql+asyncpg://...).
    rules_database_url: str = ""
    rules_web_port: int = 8002
    rules_web_bind: str = "127.0.0.1"
    rules_web_enabled: bool = True
    partitions: int = 12
    # How long the group waits for a worker that died before giving its partitions to another:
    # the bound on how late alerts are after a crash of one of several workers. 6 s, the
    # broker's least (group.min.session.timeout.ms), with a heartbeat a second: a worker killed
    # at any moment of a rebalance is taken over in 6-7.5 s (10 s took 12-13 s; measured by
    # `python -m tests.faults --takeover`, see docs in tests/faults/takeover.py).
    rules_session_timeout_s: float = Field(6.0, ge=6, le=300)
    # A stable id per worker (static group membership): a worker restarted under the same id
    # takes its partitions back without waiting for the session timeout or a rebalance.
    rules_instance_id: str | None = None
    rules_batch_max: int = Field(500, ge=1, le=100_000)
    # Participants whose state a worker keeps in memory; the others are read from the database
    # when an event of theirs arrives (or a tick needs them): memory is bounded by this, not by
    # the size of the trial.
    rules_state_cache: int = Field(20_000, ge=100)
    # Events processed (their alerts acknowledged) whose state and offsets wait to be written
    # behind them, at most: a slow commit holds no alert back until this many have queued (at
    # 1,000 events/s, 5 s of them). A crash reads them again from Kafka, with the same ids.
    rules_uncommitted_max: int = Field(5000, ge=1, le=1_000_000)
    # a partition with lag and no progress for this long is stalled (see worker._watch)
    rules_stall_s: float = Field(60.0, ge=2)
    # the topics, overridable for a second trial on one cluster (and for the fault suite)
    events_topic: str = TRIAL_EVENTS.name
    alerts_topic: str = SAFETY_ALERTS.name
    signals_topic: str = ""

    @model_validator(mode="after")
    def _defaults(self) -> RulesSettings:
        if not self.rules_database_url:
            self.rules_database_url = f"sqlite+aiosqlite:///{self.rules_data_dir / 'rules.db'}"
        if not self.signals_topic:
            self.signals_topic = f"{self.rules_app_id}-trial-signals"
        return self
