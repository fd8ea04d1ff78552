"""The ingest process's composition root: settings -> store, Kafka log, service, app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI

from services.ingest.adapters.kafka_log import KafkaEventLog
from services.ingest.adapters.store import IngestStore
from services.ingest.api import create_app
from services.ingest.domain.policy import Acceptance
from services.ingest.metrics import IngestMetrics
from services.ingest.service import Ingest
from services.ingest.settings import IngestSettings


@dataclass
class IngestParts:
    settings: IngestSettings
    store: IngestStore
    log: KafkaEventLog
    ingest: Ingest
    metrics: IngestMetrics
    app: FastAPI


def build(settings: IngestSettings) -> IngestParts:
    url = settings.ingest_database_url
    if url.startswith("sqlite") and ":///" in url and not url.endswith(":memory:"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    store = IngestStore(url, key_cache_s=settings.ingest_key_cache_s)
    log = KafkaEventLog(settings.kafka_bootstrap, settings.ingest_kafka_timeout_s)
    metrics = IngestMetrics()
    acceptance = Acceptance(
        frozenset([settings.ingest_trial_id, *settings.ingest_other_trial_ids]),
        earliest=settings.ingest_earliest_date,
        ahead=timedelta(seconds=settings.ingest_future_tolerance_s),
        max_event_bytes=settings.ingest_max_event_bytes,
        participant_patterns=(
            {settings.ingest_trial_id: settings.ingest_participant_id_pattern}
            if settings.ingest_participant_id_pattern
            else {}
        ),
    )
    ingest = Ingest(
        store,
        log,
        clock=lambda: datetime.now(UTC),
        acceptance=acceptance,
        in_flight_s=2 * settings.ingest_kafka_timeout_s + 5,
    )
    return IngestParts(
        settings, store, log, ingest, metrics, create_app(settings, store, log, ingest, metrics)
    )
