"""What the rules worker's /metrics tells ops about where its time goes, on the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.kafka_io import produce, wait_for
from tests.integration.safety_rules.worker_process import Worker
from tests.unit.safety_rules.builders import a_participant

pytestmark = pytest.mark.integration

PHASES = ("read", "evaluate", "produce", "commit")


async def test_each_committed_batch_is_timed_by_phase_and_collections_by_generation(
    kafka: str, tmp_path: Path
) -> None:
    pid = f"PH-{uuid.uuid4().hex[:8]}"
    b = a_participant(pid).enrolled(sex="M", age=50).dosed(day=0)
    b.baseline("creatinine", 1.0, day=-5).lab("creatinine", 1.9, day=30, visit="M1")
    worker = Worker(kafka, f"rules-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        worker.wait_ready()
        await produce(kafka, b.events())
        await wait_for(kafka, "safety.alerts", lambda m: any(pid.encode() == k for k, _ in m))
        batches = [
            worker.metric(f'safety_monitor_rules_batch_phase_seconds_count{{phase="{p}"}}')
            for p in PHASES
        ]
        # every phase of every committed batch, the same number of times, at least once
        assert batches[0] >= 1 and len(set(batches)) == 1
        spent = sum(
            worker.metric(f'safety_monitor_rules_batch_phase_seconds_sum{{phase="{p}"}}')
            for p in PHASES
        )
        assert 0 < spent < 60
        metrics = worker.get("/metrics")[1]
        assert 'safety_monitor_gc_pause_seconds_count{generation="0"}' in metrics
    finally:
        worker.stop()
