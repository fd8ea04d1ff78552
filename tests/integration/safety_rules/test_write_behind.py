"""The rules worker's database writes behind its alerts, on the real broker: a slow commit
(an fsync, a checkpoint, a busy disk) holds no alert back, and the state follows whole."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import AlertRaised
from contracts.topics import Topic
from deploy.kafka.launcher import create_topics
from services.safety_rules.adapters.store import RulesStore
from services.safety_rules.domain.state import ParticipantState
from tests.integration.kafka_io import events_in, produce, read_topic, wait_for
from tests.integration.safety_rules.test_worker import until, until_async
from tests.integration.safety_rules.worker_process import Worker
from tests.unit.safety_rules.builders import ParticipantBuilder, a_participant

pytestmark = pytest.mark.integration


def injured(pid: str) -> ParticipantBuilder:
    """A participant whose creatinine at day 3 is 2.6 times its baseline: an AKI alert."""
    b = a_participant(pid).enrolled(sex="F", age=61).dosed(day=0)
    return b.baseline("creatinine", 1.0, day=-2).lab("creatinine", 2.6, day=3, visit="unscheduled")


def raised_for(messages: list[tuple[bytes | None, bytes]], pid: str) -> list[AlertRaised]:
    return [
        a
        for a in events_in(messages, "safety.alerts")
        if isinstance(a, AlertRaised) and a.participant_id == pid
    ]


def aki_for(messages: list[tuple[bytes | None, bytes]], pid: str) -> list[AlertRaised]:
    return [a for a in raised_for(messages, pid) if a.rule_id == "creatinine.aki"]


async def test_alerts_go_out_while_the_database_is_held_and_their_state_follows_whole(
    kafka: str, tmp_path: Path
) -> None:
    """Another connection holds SQLite's write lock, as a slow fsync or checkpoint would hold
    the worker's commit: the alerts of three participants sent one after another still go out,
    each within seconds, and none of their state is in the database until the lock goes; then
    every state and offset is written, each participant's whole history in it."""
    app_id, topic = f"rules-{uuid.uuid4().hex[:8]}", f"events.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka, (Topic(topic, "this test's trial.events", "participant_id", (), 2),))
    db = tmp_path / f"{app_id}.db"
    store = RulesStore(f"sqlite+aiosqlite:///{db}", app_id)
    worker = Worker(kafka, app_id, tmp_path, extra_env={"SAFETY_MONITOR_EVENTS_TOPIC": topic})
    first = f"WB-{uuid.uuid4().hex[:8]}"
    behind = [f"WB-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    try:
        worker.wait_ready()
        await produce(kafka, injured(first).events(), topic)
        await wait_for(kafka, "safety.alerts", lambda m: bool(aki_for(m, first)))
        await until_async(lambda: all_stored(store, [first]))
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the worker's next commit waits (busy timeout: 60 s)
        held = time.monotonic()
        try:
            for pid in behind:
                await produce(kafka, injured(pid).events(), topic)
                await wait_for(kafka, "safety.alerts", lambda m, p=pid: bool(aki_for(m, p)), 30)
            # the alerts went out before the state that records them: none of it is written
            assert await store.load_states(behind) == {}
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - held)))  # a commit held 3 s
        finally:
            lock.execute("COMMIT")
            lock.close()
        await until_async(lambda: all_stored(store, behind))
        stored = await store.load_states(behind)
        alerts = await read_topic(kafka, "safety.alerts")
        # each alert's time in the worker is to its acknowledgement, not to the held commit;
        # counted once committed (just after the states appear: waited for)
        latency = "safety_monitor_rules_event_to_alert_seconds"
        raised = len({a.alert_id for pid in [first, *behind] for a in raised_for(alerts, pid)})
        await until(lambda: worker.metric(f"{latency}_count") >= raised, 30)
        assert worker.metric(f"{latency}_count") == raised
        assert worker.metric(f'{latency}_bucket{{le="2.0"}}') == raised
        for pid in behind:
            state = ParticipantState.from_json(stored[pid])
            assert state.seen == {str(e.event_id) for e in injured(pid).events()}
            # the state records exactly the alerts that went out for this participant
            assert set(state.raised) == {str(a.alert_id) for a in raised_for(alerts, pid)}
            assert "creatinine.aki" in state.raised.values()
        # every event read is committed: the stored positions are the ends of the topic
        stored_at = {tp: n for tp, n in (await store.offsets()).items() if tp[0] == topic}
        assert stored_at == await end_offsets(kafka, topic)
        # one AKI each (a copy sent again after a failed write would carry the same id)
        assert [len({a.alert_id for a in aki_for(alerts, pid)}) for pid in behind] == [1, 1, 1]
    finally:
        worker.stop()
        await store.close()


async def all_stored(store: RulesStore, pids: list[str]) -> bool:
    return len(await store.load_states(pids)) == len(pids)


async def end_offsets(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    """Where each of the topic's two partitions ends, those that hold anything."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in (0, 1)])
        return {(tp.topic, tp.partition): n for tp, n in ends.items() if n > 0}
    finally:
        await consumer.stop()
