"""Every service's /metrics gives how long each garbage collection held the process."""

from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry

from services.safety_rules.metrics import RulesMetrics
from services.web import observe_gc_pauses


def _count(registry: CollectorRegistry, generation: int) -> float:
    value = registry.get_sample_value(
        "safety_monitor_gc_pause_seconds_count", {"generation": str(generation)}
    )
    assert value is not None
    return value


def test_each_collection_is_timed_by_generation() -> None:
    registry = CollectorRegistry()
    observe_gc_pauses(registry)
    before = [_count(registry, g) for g in range(3)]
    gc.collect(2)
    gc.collect(2)
    gc.collect(0)
    after = [_count(registry, g) for g in range(3)]
    assert after[2] - before[2] == 2
    assert after[0] - before[0] >= 1  # (a young collection may also run on its own)


def test_a_pause_is_measured_not_counted_as_zero() -> None:
    registry = CollectorRegistry()
    observe_gc_pauses(registry)
    held = [[i] for i in range(300_000)]  # 300,000 containers for a full collection to walk

    def paused() -> float:
        value = registry.get_sample_value(
            "safety_monitor_gc_pause_seconds_sum", {"generation": "2"}
        )
        assert value is not None
        return value

    before = paused()
    started = time.perf_counter()
    gc.collect(2)
    took = time.perf_counter() - started
    assert 0 < paused() - before <= took
    del held


def test_the_rules_worker_exposes_it() -> None:
    metrics = RulesMetrics()
    gc.collect(1)
    assert _count(metrics.registry, 1) >= 1
