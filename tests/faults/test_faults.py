"""The fault suite on the real broker: workers killed with SIGKILL on a backlog, alone, in a
group of two, and during a rebalance; every run must lose nothing, stall nowhere, and repeat an
alert only as the very same bytes. CI runs FAULT_RUNS runs per scenario (default 1); the note's
table comes from `python -m tests.faults --runs 20`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import postgres_url
from tests.faults.harness import SCENARIOS, run_once, table

RUNS = int(os.environ.get("FAULT_RUNS", "1"))
PARTICIPANTS = int(os.environ.get("FAULT_PARTICIPANTS", "1000"))

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.mark.parametrize(
    ("scenario", "database"),
    [*((s, "sqlite") for s in SCENARIOS), ("two-workers-one-killed", "postgresql")],
)
async def test_no_alert_lost_or_altered_and_no_partition_stalled(
    scenario: str, database: str, kafka: str, tmp_path: Path
) -> None:
    # workers on several machines share PostgreSQL; each group's rows are its own
    url = postgres_url() if database == "postgresql" else None
    results = [
        await run_once(
            scenario, kafka, tmp_path, participants=PARTICIPANTS, seed=seed, database_url=url
        )
        for seed in range(RUNS)
    ]
    print("\n" + table(results))
    for r in results:
        assert r.expected > 500, "the workload raises alerts to lose"
        assert r.mid_stream_kills >= 1, f"no kill landed mid-stream: {r}"
        assert not r.stalled, r.note
        assert (r.lost, r.unexpected, r.differing) == (0, 0, 0), r
        assert r.got == r.expected


async def test_a_broker_outage_loses_nothing_and_the_worker_carries_on(tmp_path: Path) -> None:
    """The broker stopped for 20 s mid-stream and started again (issue 28): the same worker
    finishes, nothing lost or altered. A broker of its own: the session's is never stopped."""
    import asyncio

    from tests.conftest import launcher_in

    launcher = launcher_in(tmp_path / "kafka")
    await asyncio.to_thread(launcher.up)
    try:
        results = [
            await run_once(
                "broker-down",
                launcher.bootstrap,
                tmp_path,
                participants=PARTICIPANTS,
                seed=seed,
                launcher=launcher,
            )
            for seed in range(RUNS)
        ]
    finally:
        await asyncio.to_thread(launcher.down, purge=True)
    print("\n" + table(results))
    for r in results:
        assert r.expected > 500 and r.mid_stream_kills >= 1, r
        assert not r.stalled, r.note
        assert (r.lost, r.unexpected, r.differing) == (0, 0, 0), r
        assert r.got == r.expected
