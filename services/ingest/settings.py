"""Settings of the ingest service, from SAFETY_MONITOR_* environment variables."""

from __future__ import annotations

from datetime import date

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFETY_MONITOR_")

    kafka_bootstrap: str = "127.0.0.1:9092"
    ingest_database_url: str = "sqlite+aiosqlite:///.local/ingest.db"
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8001
    ingest_max_body_bytes: int = Field(5 * 2**20, gt=0, description="Larger requests get 413")
    ingest_max_import_bytes: int = Field(64 * 2**20, gt=0, description="For file imports")
    ingest_max_batch: int = Field(5000, gt=0, description="Events in one POST /v1/events")
    ingest_max_bundle_entries: int = Field(5000, gt=0, description="Entries of one FHIR Bundle")
    ingest_kafka_timeout_s: float = Field(10.0, gt=0, description="Then 503 with Retry-After")
    ingest_retry_after_s: int = 5
    # how often writes whose outcome was left unknown (a 503 after a timeout) are read back
    # from the topic (`safety_monitor_ingest_unknown_writes`)
    ingest_reconcile_s: float = Field(30.0, gt=0)
    ingest_trial_id: str = Field("UCMSC-DN-01", description="The trial FHIR Bundles map into")
    # The form of a participant id in ingest_trial_id, a regular expression (e.g. DN-[0-9]{3}):
    # anything else is a 422 naming it. Unset: any pseudonymous code the contract takes; two
    # spellings of one participant (dn-101, DN_101, DN-101.) are refused either way.
    ingest_participant_id_pattern: str | None = None
    # Other trials this service accepts (e.g. a sponsor's SDTM STUDYID); any other is a 422.
    ingest_other_trial_ids: list[str] = Field(default_factory=list)
    # Instants an event may name: from this date to now + the tolerance; others are a 422.
    ingest_earliest_date: date = date(1900, 1, 1)
    ingest_future_tolerance_s: float = Field(86400.0, ge=0)
    ingest_max_event_bytes: int = Field(64 * 2**10, gt=0, description="One encoded event")
    ingest_body_timeout_s: float = Field(30.0, gt=0, description="Then 408: a body too slow")
    ingest_max_json_depth: int = Field(64, gt=0, description="Nesting of a request body")
    # SDTM dates have no time zone; they are read in this one (IANA name), and imports say so.
    ingest_site_timezone: str = "UTC"
    # A valid API key is read from the database at most this often per process: a key revoked
    # with `ingest keys --revoke` stops working within it (0: read on every request).
    ingest_key_cache_s: float = Field(5.0, ge=0)
