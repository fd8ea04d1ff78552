"""The worker's Prometheus metrics, in a registry of its own (no participant in any label)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.web import observe_gc_pauses

# the phases of a batch, as `safety_monitor_rules_batch_phase_seconds` labels them
BATCH_PHASES = ("read", "evaluate", "produce", "commit")


@dataclass
class RulesMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.gc_pauses = observe_gc_pauses(r)
        self.events = Counter(
            "safety_monitor_rules_events_total",
            "Clinical events evaluated",
            ["event_type"],
            registry=r,
        )
        self.duplicates = Counter(
            "safety_monitor_rules_duplicate_events_total",
            "Events already seen (replays, redeliveries)",
            registry=r,
        )
        self.dead_letters = Counter(
            "safety_monitor_rules_dead_letters_total",
            "Messages that could not be decoded or validated",
            registry=r,
        )
        self.alerts = Counter(
            "safety_monitor_rules_alerts_total",
            "Alerts raised",
            ["rule_id", "severity"],
            registry=r,
        )
        self.withdrawn = Counter(
            "safety_monitor_rules_alerts_withdrawn_total",
            "Alerts withdrawn because a correction removed their evidence, by rule",
            ["rule_id"],
            registry=r,
        )
        self.ticks = Counter(
            "safety_monitor_rules_ticks_total", "Time-based rule evaluations", registry=r
        )
        self.evaluate_seconds = Histogram(
            "safety_monitor_rules_evaluate_seconds",
            "Engine time per event",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.event_to_alert_seconds = Histogram(
            "safety_monitor_rules_event_to_alert_seconds",
            "From the worker's fetch of an event to its alert acknowledged by Kafka (the alert "
            "is out; its state is written behind), counted once committed: processing time (a "
            "replay or a late lab adds nothing; lag is its own gauge)",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.batch_phase_seconds = Histogram(
            "safety_monitor_rules_batch_phase_seconds",
            "Each batch's time in each phase: reading states from the database, evaluating "
            "(and encoding the states it changed), waiting for Kafka to acknowledge its alerts, "
            "and the transaction that wrote it behind them (batches queued behind a slow one "
            "share the next)",
            ["phase"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        for phase in BATCH_PHASES:
            self.batch_phase_seconds.labels(phase)
        self.ready = Gauge(
            "safety_monitor_rules_ready",
            "1 when partitions are assigned and claimed, none stalled, the last batch committed",
            registry=r,
        )
        self.lag = Gauge(
            "safety_monitor_rules_consumer_lag",
            "Messages on the owned partitions not yet processed (end offset minus committed)",
            ["topic"],
            registry=r,
        )
        self.uncommitted = Gauge(
            "safety_monitor_rules_uncommitted_events",
            "Events processed, their alerts acknowledged, whose state waits to be written "
            "(about RULES_UNCOMMITTED_MAX at most; a crash reads them again from Kafka)",
            registry=r,
        )
        self.age = Gauge(
            "safety_monitor_rules_last_processed_age_seconds",
            "Seconds since the worker last committed a batch (grows while idle: read with lag)",
            registry=r,
        )
        self.in_memory = Gauge(
            "safety_monitor_rules_participants_in_memory",
            "Participants whose state the worker holds in memory (at most RULES_STATE_CACHE)",
            registry=r,
        )
        self.stalled = Gauge(
            "safety_monitor_rules_stalled_partitions",
            "Owned partitions with lag and no progress for RULES_STALL_S",
            registry=r,
        )
        self.batch_failures = Counter(
            "safety_monitor_rules_batch_failures_total",
            "Batches not committed (a produce, the database or the engine failed); retried",
            registry=r,
        )
        self.producer_restarts = Counter(
            "safety_monitor_rules_producer_restarts_total",
            "Producers replaced after OutOfOrderSequenceNumber or a fenced epoch",
            registry=r,
        )
        self.fenced = Counter(
            "safety_monitor_rules_fenced_total",
            "Batches refused because another worker had claimed the partition",
            registry=r,
        )
