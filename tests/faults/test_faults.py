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
from tests.faults.stack import StackResult, run_stack_once, stack_table
from tests.faults.takeover import takeover_once

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


async def test_the_whole_stack_through_an_outage_loses_nothing_repeats_nothing_stalls_nowhere(
    tmp_path: Path,
) -> None:
    """Issue 28, item 5 (short version): ingest, worker, notifier and projection as processes
    on a broker of their own, sites posting and retrying every non-2xx; in one stack the broker
    stopped 20 s, in another every SQLite store locked 10 s at once (the two run side by side:
    each mostly waits). Every event on the topic once, the alerts `evaluate` gives byte for
    byte, each emailed once, the trail verified against the log, and a serious AE posted after
    the fault emailed. `python -m tests.faults --stack` runs every scenario (70 s, 10 minutes,
    each store alone) as often as asked. Beside them run the projection's and the notifier's
    own outage tests (tests/integration/{audit,notifier}/test_outages.py)."""
    import asyncio

    from tests.integration.audit.test_outages import (
        the_projection_waits_out_an_outage_anchors_later_and_stops_promptly as projection,
    )
    from tests.integration.notifier.test_outages import (
        a_locked_database_and_a_broker_outage_neither_stop_nor_repeat_anything as notifier,
    )

    for name in ("projection", "notifier"):
        (tmp_path / name).mkdir()
    # every run ends (its processes and broker stopped) before any failure is reported
    done = await asyncio.gather(
        *(
            run_stack_once(
                scenario, tmp_path / scenario, participants=PARTICIPANTS // 10, seed=0, post_s=20
            )
            for scenario in ("broker-20s", "lock-all")
        ),
        # the projection's and the notifier's own outage tests (issue 28's findings), side by
        # side with these: each waits on a broker of its own
        projection(tmp_path / "projection"),
        notifier(tmp_path / "notifier"),
        return_exceptions=True,
    )
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    results = [r for r in done if isinstance(r, StackResult)]
    assert len(results) == 2, done
    print("\n" + stack_table(list(results)) + "".join(f"\n{r}" for r in results))
    for r in results:
        assert r.expected > 100 and r.on_topic == r.events, r
        assert (r.stored_twice, r.lost, r.unexpected, r.differing) == (0, 0, 0, 0), r
        assert (r.unmailed, r.repeated, r.stalled) == (0, 0, ""), r
        assert r.verified, r.note
        assert r.recovery_s is not None, f"{r.scenario}: a serious AE after it, never emailed"


async def test_a_worker_killed_as_a_rebalance_begins_is_taken_over(
    kafka: str, tmp_path: Path
) -> None:
    """The slow case of issue 28 (a kill meeting a join): worker A killed in its revoke
    callback while B joins; B claims every partition. The seconds are printed, not asserted
    (`python -m tests.faults --takeover` measures every moment: 6-8 s at the default 6 s
    session, 12-13 s at 10 s)."""
    t = await takeover_once("revoking", kafka, tmp_path, static=True, session_s=6, seed=0)
    print(f"\ntakeover: {t}")
    assert t.seconds is not None, "B never claimed every partition after A was killed"
