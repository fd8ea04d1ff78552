"""The rules worker's writer, with a store in memory: batches written behind, in order, merged
when the database was slow; a failed write drops what was built on it; and no state waiting to
be written ever leaves memory. (On the real broker and database: tests/integration/.)"""

from __future__ import annotations

import asyncio

import pytest

from services.safety_rules.adapters.store import TP, Commit
from services.safety_rules.domain.config import RulesConfig
from services.safety_rules.domain.state import ParticipantState
from services.safety_rules.metrics import RulesMetrics
from services.safety_rules.settings import RulesSettings
from services.safety_rules.worker import Owned, Processed, RulesWorker

EVENTS: TP = ("trial.events", 0)


class SlowStore:
    """Commits in memory; each waits for `gate` (the disk), and the first fails if told to."""

    def __init__(self, fail_first: bool = False) -> None:
        self.commits: list[Commit] = []
        self.gate = asyncio.Event()
        self.fail_first = fail_first

    async def commit(self, batch: Commit) -> None:
        await self.gate.wait()
        if self.fail_first:
            self.fail_first = False
            raise OSError("disk I/O error")
        self.commits.append(batch)


def a_worker(store: SlowStore, cache: int = 20_000) -> RulesWorker:
    settings = RulesSettings(rules_state_cache=cache, rules_web_enabled=False)
    worker = RulesWorker(settings, RulesConfig(), RulesMetrics(), store)  # type: ignore[arg-type]
    worker.owned[EVENTS] = Owned(epoch=1, next_offset=0, committed=0)
    return worker


def batch(offset: int, states: dict[str, bytes]) -> Processed:
    return Processed(
        Commit({EVENTS: (1, offset)}, {pid: (0, s) for pid, s in states.items()}, {}),
        [([("event", "lab.result")], 0.0)],
        events=10,
    )


async def test_batches_queued_behind_a_slow_commit_go_in_one_transaction_latest_winning() -> None:
    store = SlowStore()
    worker = a_worker(store)
    worker._write_behind(batch(10, {"P1": b"p1@10"}))
    await asyncio.sleep(0)  # the writer takes the first batch and waits on the disk
    worker._write_behind(batch(20, {"P1": b"p1@20", "P2": b"p2@20"}))
    worker._write_behind(batch(30, {"P2": b"p2@30"}))
    assert worker.unsaved == {"P1": 2, "P2": 2}
    waiting = "safety_monitor_rules_uncommitted_events"
    assert worker.metrics.registry.get_sample_value(waiting) == 30  # one writing, two queued
    assert worker.owned[EVENTS].committed == 0  # nothing in the database yet
    store.gate.set()
    await worker._written(wait=True)
    assert [c.offsets for c in store.commits] == [{EVENTS: (1, 10)}, {EVENTS: (1, 30)}]
    assert store.commits[1].participants == {"P1": (0, b"p1@20"), "P2": (0, b"p2@30")}
    assert worker.owned[EVENTS].committed == 30
    assert worker.unsaved == {}
    assert worker.metrics.registry.get_sample_value(waiting) == 0
    # counted once written: three batches of one event each
    assert worker.metrics.events.labels("lab.result")._value.get() == 3


async def test_a_failed_write_drops_the_batches_built_on_it_and_is_raised_once() -> None:
    store = SlowStore(fail_first=True)
    worker = a_worker(store)
    worker._write_behind(batch(10, {"P1": b"p1@10"}))
    await asyncio.sleep(0)
    worker._write_behind(batch(20, {"P1": b"p1@20"}))
    store.gate.set()
    with pytest.raises(OSError, match="disk I/O error"):
        await worker._written(wait=True)
    await worker._written(wait=True)  # raised once: the caller went back to the database
    assert store.commits == []  # the later batch was built on the failed one: not written
    assert worker.queued == [] and worker.unsaved == {}
    assert worker.owned[EVENTS].committed == 0
    assert worker.metrics.events.labels("lab.result")._value.get() == 0


def test_eviction_never_drops_a_state_not_yet_written() -> None:
    worker = a_worker(SlowStore(), cache=100)
    worker.cache[0] = {f"P{n:03}": ParticipantState() for n in range(110)}  # oldest first
    worker.unsaved = {f"P{n:03}": 1 for n in range(20)}  # the 20 oldest wait to be written
    worker._evict()
    held = set(worker.cache[0])
    assert len(held) == 100
    assert {f"P{n:03}" for n in range(20)} <= held  # none of those waiting was dropped
    assert held.isdisjoint(f"P{n:03}" for n in range(20, 30))  # the oldest written ones were
    assert worker.metrics.in_memory._value.get() == 100
