"""The rules worker on the real broker: alerts out, dead letters, restarts, ticks, scale-out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts import AlertRaised, AlertWithdrawn, decode, encode, key_for
from contracts.dead_letters import original
from contracts.topics import DEAD_LETTER, Topic
from deploy.kafka.launcher import create_topics
from services.safety_rules.adapters.store import Commit, RulesStore
from tests.integration.kafka_io import events_in, produce, produce_raw, read_topic, wait_for
from tests.integration.safety_rules.worker_process import Worker
from tests.unit.safety_rules.builders import DAY0, ParticipantBuilder, a_participant


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}-1"


def alerts_for(messages: list[tuple[bytes | None, bytes]], pids: set[str]) -> list[AlertRaised]:
    return [
        a
        for a in events_in(messages, "safety.alerts")
        if isinstance(a, AlertRaised) and a.participant_id in pids
    ]


def rules_of(alerts: list[AlertRaised]) -> set[str]:
    return {a.rule_id for a in alerts}


async def test_alerts_survive_restarts_with_none_lost_or_repeated(
    kafka: str, tmp_path: Path
) -> None:
    pid, app_id = unique("RS"), unique("rules")
    p: ParticipantBuilder = (
        a_participant(pid)
        .enrolled(sex="M", age=50)
        .dosed(cells_per_kg=1.3e6)
        .baseline("creatinine", 1.0)
    )
    first = p.events()
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        await produce(kafka, list(first))
        got = await wait_for(
            kafka, "safety.alerts", lambda m: rules_of(alerts_for(m, {pid})) == {"dose.deviation"}
        )

        # A malformed message is dead-lettered with its reason; the worker carries on.
        await produce_raw(kafka, "trial.events", pid.encode(), b'{"event_type": "lab.resulted"}')
        dead = await wait_for(
            kafka, "trial.dead-letter", lambda m: any(k == pid.encode() for k, _ in m)
        )
        letter = next(v for k, v in dead if k == pid.encode())
        assert "event_id: is required" in json.loads(letter)["reason"]
        assert original(letter) == b'{"event_type": "lab.resulted"}'
    finally:
        assert worker.stop(signal.SIGTERM) is not None

    # While it is down: a rise needing the baseline it saw before, and a duplicate of the dose.
    second = p.lab("creatinine", 2.0, day=30, visit="M1").events()[len(first) :]
    await produce(kafka, [*second, first[1]])
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        expected = {"dose.deviation", "creatinine.aki", "egfr.decline"}
        got = await wait_for(
            kafka, "safety.alerts", lambda m: rules_of(alerts_for(m, {pid})) == expected
        )
        counts = Counter(a.alert_id for a in alerts_for(got, {pid}))
        assert set(counts.values()) == {1}, "an alert was produced twice"
        (aki,) = [a for a in alerts_for(got, {pid}) if a.rule_id == "creatinine.aki"]
        assert aki.facts["stage"] == 2 and aki.severity.value == "critical"
    finally:
        worker.stop(signal.SIGKILL)  # a crash, this time

    await produce(kafka, p.ae(serious=True, ctcae_grade=3).events()[-1:])
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        got = await wait_for(
            kafka, "safety.alerts", lambda m: "sae.reported" in rules_of(alerts_for(m, {pid}))
        )
        by_id: dict[uuid.UUID, set[bytes]] = {}
        for _, raw in got:
            (a,) = events_in([(None, raw)], "safety.alerts") or [None]
            if isinstance(a, AlertRaised) and a.participant_id == pid:
                by_id.setdefault(a.alert_id, set()).add(raw)
        assert rules_of(alerts_for(got, {pid})) == {*expected, "sae.reported"}
        # after a crash a repeat is possible only as the very same bytes, which consumers drop
        assert all(len(versions) == 1 for versions in by_id.values())
    finally:
        worker.stop()


async def test_time_based_rules_run_on_the_worker_clock(kafka: str, tmp_path: Path) -> None:
    pid = unique("TK")
    dosed_day = (datetime.now(UTC) - DAY0).days - 60  # dosed 60 days ago: M1 is overdue
    events = a_participant(pid).enrolled(day=dosed_day - 5).dosed(day=dosed_day).events()
    worker = Worker(kafka, unique("rules"), tmp_path, tick_s=1)
    try:
        worker.wait_ready()
        await produce(kafka, list(events))
        got = await wait_for(
            kafka, "safety.alerts", lambda m: "visit.overdue" in rules_of(alerts_for(m, {pid}))
        )
        overdue = [a for a in alerts_for(got, {pid}) if a.rule_id == "visit.overdue"]
        assert [a.thresholds["visit"] for a in overdue] == ["M1"]
    finally:
        worker.stop()


async def test_two_workers_split_the_partitions_and_raise_each_alert_once(
    kafka: str, tmp_path: Path
) -> None:
    app_id = unique("rules")
    pids = {unique(f"SC{n}") for n in range(24)}
    workers = [Worker(kafka, app_id, tmp_path), Worker(kafka, app_id, tmp_path)]
    try:
        for w in workers:
            w.wait_ready()
        events = [
            e
            for pid in sorted(pids)
            for e in a_participant(pid)
            .enrolled()
            .dosed(cells_per_kg=2e6)
            .ae(serious=True, ctcae_grade=3, relatedness="probable")
            .events()
        ]
        await produce(kafka, events)
        got = await wait_for(
            kafka, "safety.alerts", lambda m: len(alerts_for(m, pids)) >= 2 * len(pids)
        )
        mine = alerts_for(got, pids)
        assert Counter(a.rule_id for a in mine) == {"dose.deviation": 24, "sae.reported": 24}
        assert len({a.alert_id for a in mine}) == len(mine)
        processed = [w.metric("safety_monitor_rules_events_total") for w in workers]
        assert all(n > 0 for n in processed), f"one worker did all the work: {processed}"

        # the trial-level stopping rule saw both workers' participants
        def stopping(messages: list[tuple[bytes | None, bytes]]) -> bool:
            return any(k == b"trial" and b'"trial.stopping_rule"' in v for k, v in messages)

        await wait_for(kafka, "safety.alerts", stopping)
    finally:
        for w in workers:
            w.stop()


async def test_late_data_raises_and_a_correction_withdraws_on_the_real_broker(
    kafka: str, tmp_path: Path
) -> None:
    """Arrival order is not clinical order: the baseline is entered after the M1 result; then the
    M1 result is corrected, and the worker withdraws the alerts it stood on."""
    pid = unique("LT")
    b = a_participant(pid).enrolled(sex="M", age=50).dosed(day=0)
    b.lab("creatinine", 1.9, day=30, visit="M1").baseline("creatinine", 1.0, day=-5)
    b.corrected(2, value=1.05)
    *first, correction = b.events()
    worker = Worker(kafka, unique("rules"), tmp_path)
    try:
        worker.wait_ready()
        await produce(kafka, first)
        got = await wait_for(
            kafka,
            "safety.alerts",
            lambda m: {"egfr.decline", "creatinine.aki"} <= rules_of(alerts_for(m, {pid})),
        )
        raised = {str(a.alert_id).encode() for a in alerts_for(got, {pid})}
        await produce(kafka, [correction])
        life = await wait_for(
            kafka, "safety.alert-lifecycle", lambda m: sum(k in raised for k, _ in m) >= 2
        )
        withdrawn = [decode(v) for k, v in life if k in raised]
        assert all(isinstance(w, AlertWithdrawn) for w in withdrawn)
        assert sorted(w.rule_id for w in withdrawn) == ["creatinine.aki", "egfr.decline"]  # type: ignore[union-attr]
        assert {w.withdrawn_by for w in withdrawn} == {correction.event_id}  # type: ignore[union-attr]
        # counted once committed, which is just after they are on the topic
        await until(lambda: worker.metric("safety_monitor_rules_alerts_withdrawn_total") == 2)
        # the labs were recorded months ago (DAY0): the latency is the worker's processing
        # time, not the data's age (it once observed months)
        alerts = worker.metric("safety_monitor_rules_event_to_alert_seconds_count")
        assert alerts >= 2
        assert worker.metric("safety_monitor_rules_event_to_alert_seconds_sum") / alerts < 30
        assert 0 <= worker.metric("safety_monitor_rules_last_processed_age_seconds") < 60
        assert "safety_monitor_rules_last_processed_age_seconds " in worker.get("/metrics")[1]
    finally:
        worker.stop()


async def test_any_bytes_are_dead_lettered_whole_and_a_letter_past_the_limit_points_back(
    kafka: str, tmp_path: Path
) -> None:
    pid = unique("DL")
    small, big = b"\xff\xfe\x00 not utf-8", bytes(range(256)) * (700 * 4)  # 700 KiB
    worker = Worker(kafka, unique("rules"), tmp_path)
    try:
        worker.wait_ready()
        await produce_raw(kafka, "trial.events", pid.encode(), small)
        await produce_raw(kafka, "trial.events", pid.encode(), big)
        await produce(kafka, a_participant(pid).enrolled().dosed(cells_per_kg=2e6).events())
        dead = await wait_for(
            kafka, "trial.dead-letter", lambda m: sum(k == pid.encode() for k, _ in m) >= 2
        )
        first, second = [json.loads(v) for k, v in dead if k == pid.encode()]
        assert base64.b64decode(first["original_base64"]) == small
        assert second["original_base64"] is None  # too big to carry: a pointer instead
        assert second["original_size"] == len(big)
        assert second["original_sha256"] == hashlib.sha256(big).hexdigest()
        assert (second["topic"], second["consumer"]) == ("trial.events", "safety_rules")
        source = await read_at(kafka, "trial.events", second["partition"], second["offset"])
        assert source == big
        # and the participant's own events behind the poison are evaluated
        await wait_for(kafka, "safety.alerts", lambda m: bool(alerts_for(m, {pid})))
    finally:
        worker.stop()


async def test_a_dead_letter_that_cannot_be_written_stops_the_partition_instead_of_skipping(
    kafka: str, tmp_path: Path
) -> None:
    # Its own events topic: on trial.events this worker (a new group) read every earlier test's
    # events, other poison among them, each stuck in backoff while letters could not be written,
    # and under CI's load the letter awaited here once came later than 90 s.
    pid, app_id, topic = unique("DW"), unique("rules"), f"events.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka, (Topic(topic, "this test's trial.events", "participant_id", (), 2),))
    store = RulesStore(f"sqlite+aiosqlite:///{tmp_path / app_id}.db", app_id)
    worker = Worker(kafka, app_id, tmp_path, extra_env={"SAFETY_MONITOR_EVENTS_TOPIC": topic})
    try:
        worker.wait_ready()
        async with topic_config(kafka, "trial.dead-letter", {"max.message.bytes": "100"}):
            poison = await produce_raw(kafka, topic, pid.encode(), b'{"not": "event"}')
            for e in a_participant(pid).enrolled().dosed(cells_per_kg=2e6).events():
                await produce_raw(kafka, topic, key_for(e), encode(e))
            await until(lambda: worker.metric("safety_monitor_rules_batch_failures_total") >= 2)
            assert worker.get("/readyz")[0] == 503
            # nothing committed past the message whose letter could not be written
            assert (await store.offsets()).get(poison[:2], 0) <= poison[2]
        # the topic takes it again: the letter is written and the partition moves past it
        dead = await wait_for(
            kafka, "trial.dead-letter", lambda m: any(k == pid.encode() for k, _ in m), 90
        )
        letters = [v for k, v in dead if k == pid.encode()]
        assert len(letters) == 1 and original(letters[0]) == b'{"not": "event"}'
        await until_async(lambda: _past(store, poison))
        await until(lambda: worker.get("/readyz")[0] == 200)
        assert alerts_for(await read_topic(kafka, "safety.alerts"), {pid})
    finally:
        worker.stop()
        await store.close()


async def test_a_stalled_partition_fails_readiness_and_the_worker_exits_for_a_restart(
    kafka: str, tmp_path: Path
) -> None:
    pid, app_id = unique("ST"), unique("rules")
    store = RulesStore(f"sqlite+aiosqlite:///{tmp_path / app_id}.db", app_id)
    env = {"SAFETY_MONITOR_RULES_STALL_S": "3"}
    worker = Worker(kafka, app_id, tmp_path, extra_env=env)
    worker.wait_ready()
    lock = sqlite3.connect(tmp_path / f"{app_id}.db", isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # every commit of the worker now waits
        events = a_participant(pid).enrolled().dosed(cells_per_kg=2e6).events()
        *_, last = [await produce_raw(kafka, "trial.events", key_for(e), encode(e)) for e in events]
        await until(lambda: worker.get("/readyz")[0] == 503)
        ready = json.loads(worker.get("/readyz")[1])
        assert ready["stalled"] >= 1
        assert worker.metric("safety_monitor_rules_stalled_partitions") >= 1
        assert worker.proc.wait(timeout=60) == 70  # gave up: its supervisor restarts it
    finally:
        lock.rollback()
        lock.close()
        worker.stop()
    assert (await store.offsets()).get(last[:2], 0) <= last[2]  # nothing was committed
    worker = Worker(kafka, app_id, tmp_path, extra_env=env)
    try:
        worker.wait_ready()
        await until(lambda: worker.get("/readyz")[0] == 200)
        await wait_for(kafka, "safety.alerts", lambda m: bool(alerts_for(m, {pid})))
        await until_async(lambda: _past(store, last))
    finally:
        worker.stop()
        await store.close()


async def _past(store: RulesStore, where: tuple[str, int, int]) -> bool:
    return (await store.offsets()).get(where[:2], 0) > where[2]


async def until_async(condition: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s}s")
        await asyncio.sleep(0.2)


async def until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s}s")
        await asyncio.sleep(0.2)


async def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await consumer.getone()
        return record.value  # type: ignore[no-any-return]
    finally:
        await consumer.stop()


@asynccontextmanager
async def topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> AsyncIterator[None]:
    """A topic's configuration changed for the block, then removed again (back to default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    resource = ConfigResourceType.TOPIC
    try:
        await admin.alter_configs([ConfigResource(resource, topic, configs=configs)])
        yield
    finally:
        current = DEAD_LETTER.config if topic == DEAD_LETTER.name else {}
        await admin.alter_configs([ConfigResource(resource, topic, configs=dict(current))])
        await admin.close()


async def test_a_database_ahead_of_its_topic_is_refused_not_read_past(
    kafka: str, tmp_path: Path
) -> None:
    """The topic was recreated (or the database belongs to another cluster): reading on from
    the stored offsets would skip every event, so the worker stays unready and says why."""
    app_id, topic = unique("rules"), f"recreated.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka, (Topic(topic, "a recreated trial.events", "participant_id", (), 2),))
    url = f"sqlite+aiosqlite:///{tmp_path / app_id}.db"
    store = RulesStore(url, app_id)
    await store.migrate()
    claims = await store.claim([(topic, 0), (topic, 1)], "an earlier worker")
    await store.commit(Commit({tp: (c.epoch, 5000) for tp, c in claims.items()}, {}, {}))
    await store.close()
    env = {"SAFETY_MONITOR_EVENTS_TOPIC": topic}
    worker = Worker(kafka, app_id, tmp_path, database_url=url, extra_env=env)
    try:

        def refused() -> bool:
            try:
                return bool(json.loads(worker.get("/readyz")[1])["database_ahead_of_topic"])
            except OSError:  # not listening yet
                return False

        await until(refused)
        status, body = worker.get("/readyz")
        assert status == 503
        assert json.loads(body)["database_ahead_of_topic"] == [f"{topic}[0]", f"{topic}[1]"]
        assert "the database has processed up to offset 5000" in worker.tail()
    finally:
        worker.stop()


async def test_memory_holds_at_most_the_cache_and_an_evicted_participant_keeps_its_history(
    kafka: str, tmp_path: Path
) -> None:
    """300 participants through a worker that keeps 100 in memory: the tick still reaches every
    one (an overdue M1 for each, most read back from the database), and a rise judged long
    after a participant left memory is judged against the baseline it had (an AKI for each)."""
    dosed_day = (datetime.now(UTC) - DAY0).days - 60  # dosed 60 days ago: M1 is overdue
    people = [unique("MEM") for _ in range(300)]
    first, later = [], []
    for pid in people:
        p = a_participant(pid).enrolled(day=dosed_day - 5).dosed(day=dosed_day)
        p.baseline("creatinine", 1.0, day=dosed_day - 2)
        history = len(p.events())
        p.lab("creatinine", 2.6, dosed_day + 3)
        first += p.events()[:history]
        later += p.events()[history:]
    worker = Worker(
        kafka,
        unique("rules"),
        tmp_path,
        tick_s=2,
        extra_env={"SAFETY_MONITOR_RULES_STATE_CACHE": "100"},
    )
    try:
        worker.wait_ready()
        await produce(kafka, first)
        ours = set(people)

        def overdue(m: list[tuple[bytes | None, bytes]]) -> set[str]:
            return {
                a.participant_id or "" for a in alerts_for(m, ours) if a.rule_id == "visit.overdue"
            }

        got = await wait_for(kafka, "safety.alerts", lambda m: overdue(m) == ours, timeout_s=180)
        assert overdue(got) == ours  # the tick reached every participant, in memory or not
        assert 0 < worker.metric("safety_monitor_rules_participants_in_memory") <= 100
        await produce(kafka, later)

        def aki(m: list[tuple[bytes | None, bytes]]) -> set[str]:
            return {
                a.participant_id or "" for a in alerts_for(m, ours) if a.rule_id == "creatinine.aki"
            }

        got = await wait_for(kafka, "safety.alerts", lambda m: aki(m) == ours, timeout_s=180)
        assert aki(got) == ours  # each judged against its stored baseline (2.6 vs 1.0)
        assert 0 < worker.metric("safety_monitor_rules_participants_in_memory") <= 100
    finally:
        worker.stop()


async def test_an_event_the_engine_fails_on_raises_a_critical_engine_failed_beside_its_letter(
    kafka: str, tmp_path: Path
) -> None:
    """Fail safe: the event is dead-lettered (the participants behind it go on) and a person is
    told at once by a critical `engine.failed` naming it, not only a dead-letter counter."""
    pid, app_id = unique("EF"), unique("rules")
    p = a_participant(pid).enrolled().dosed().baseline("creatinine", 1.0, day=-3)
    events = p.lab("creatinine", 1.6, day=20, visit="M1").events()
    dose = json.loads(encode(events[1]))
    dose["weight_kg"] = 0  # recorded before the door's bound: the dose rule divides by it
    worker = Worker(kafka, app_id, tmp_path)
    try:
        worker.wait_ready()
        await produce(kafka, [events[0]])
        await produce_raw(kafka, "trial.events", pid.encode(), json.dumps(dose).encode())
        await produce(kafka, events[2:])
        got = await wait_for(
            kafka, "safety.alerts",
            lambda m: {"engine.failed", "creatinine.aki"} <= rules_of(alerts_for(m, {pid})),
        )  # fmt: skip
        dead = await wait_for(
            kafka, "trial.dead-letter", lambda m: any(k == pid.encode() for k, _ in m)
        )
    finally:
        assert worker.stop(signal.SIGTERM) is not None
    (failed,) = [a for a in alerts_for(got, {pid}) if a.rule_id == "engine.failed"]
    assert failed.severity.value == "critical"
    assert [str(e) for e in failed.evidence] == [dose["event_id"]]
    assert failed.facts == {"event_type": "dose.administered", "error": "ZeroDivisionError"}
    letter = json.loads(next(v for k, v in dead if k == pid.encode()))
    assert letter["reason"] == "the rules engine failed on this event"
