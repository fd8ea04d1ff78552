"""The notifier's Prometheus metrics, in a registry of its own (no participant in any label)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.web import observe_gc_pauses


@dataclass
class NotifierMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.gc_pauses = observe_gc_pauses(r)
        self.requests = Counter(
            "safety_monitor_notifier_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.consumed = Counter(
            "safety_monitor_notifier_consumed_total", "Messages consumed", registry=r
        )
        self.refused = Counter(
            "safety_monitor_notifier_refused_total",
            "Messages refused (not decodable, or not of their topic's catalog)",
            registry=r,
        )
        self.deliveries = Counter(
            "safety_monitor_notifier_deliveries_total",
            "Delivery attempts by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "safety_monitor_notifier_delivery_latency_seconds",
            "From an alert being raised (its recorded_at) to its first notice delivered",
            ["channel"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
        )
        self.acknowledged = Counter(
            "safety_monitor_notifier_acknowledged_total", "Alerts acknowledged here", registry=r
        )
        self.loop_failures = Counter(
            "safety_monitor_notifier_loop_failures_total",
            "Failures of a loop, each logged with its cause and retried after a backoff",
            ["loop"],
            registry=r,
        )
        self.facts_waiting = Gauge(
            "safety_monitor_notifier_facts_waiting",
            "Lifecycle facts recorded and not yet produced (the broker not answering)",
            registry=r,
        )
        self.open_critical = Gauge(
            "safety_monitor_notifier_open_critical_alerts",
            "Critical alerts not acknowledged, resolved or withdrawn",
            registry=r,
        )
        self.oldest_open_critical = Gauge(
            "safety_monitor_notifier_oldest_open_critical_age_seconds",
            "Age of the oldest unacknowledged critical alert (0 when none)",
            registry=r,
        )
        self.next_deadline = Gauge(
            "safety_monitor_notifier_next_deadline_seconds",
            "Seconds until the nearest regulatory or review deadline (due_by) of an open alert; "
            "negative when passed, NaN when no open alert has one",
            registry=r,
        )
        self.outbox = Gauge(
            "safety_monitor_notifier_outbox_depth", "Messages owed, not yet sent", registry=r
        )
        self.age = Gauge(
            "safety_monitor_notifier_last_processed_age_seconds",
            "Seconds since the notifier last took in a batch of alerts (grows while idle)",
            registry=r,
        )
        self.lag = Gauge(
            "safety_monitor_notifier_consumer_lag",
            "Messages on the consumed topics not yet processed",
            ["topic"],
            registry=r,
        )
