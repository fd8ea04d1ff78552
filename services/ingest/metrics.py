"""Ingest's Prometheus metrics, in a registry of its own (no participant in any label)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.web import observe_gc_pauses


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.gc_pauses = observe_gc_pauses(r)
        self.requests = Counter(
            "safety_monitor_ingest_requests_total", "HTTP requests", ["route", "status"], registry=r
        )
        self.events = Counter(
            "safety_monitor_ingest_events_total",
            "Events by outcome",
            ["source", "event_type", "outcome"],
            registry=r,
        )
        self.refused = Counter(
            "safety_monitor_ingest_refused_total",
            "Refused requests",
            ["source", "status"],
            registry=r,
        )
        self.kafka_unavailable = Counter(
            "safety_monitor_ingest_kafka_unavailable_total",
            "Requests answered 503: Kafka did not acknowledge",
            registry=r,
        )
        self.unknown_writes = Gauge(
            "safety_monitor_ingest_unknown_writes",
            "Events handed to Kafka and never acknowledged, not found on the topic since: "
            "each waits for its client's retry",
            registry=r,
        )
        self.latency = Histogram(
            "safety_monitor_ingest_request_seconds", "Request latency", ["route"], registry=r
        )
        self.import_rows = Counter(
            "safety_monitor_ingest_import_rows_total",
            "Rows of imported files by outcome",
            ["format", "outcome"],
            registry=r,
        )
